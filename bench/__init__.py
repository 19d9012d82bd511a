"""Benchmarks of remotefs: ``scripts/bench emulator|mount|cluster|odm-names``.

``scripts/bench`` runs ``python -m bench`` from the repository root with its .venv (made by
``scripts/setup`` with the test extras if missing). What each measures, against which
reference, and how to read the figures is said by the module that runs it:

- ``emulator``: ``scripts/bench emulator``, the emulator's own throughput vs ``curl file://``;
- ``mount``: ``scripts/bench mount``, the data, the emulators, the runs and the table; its
  workload groups, one module each: ``sequential``, ``bam`` (``bam-region``,
  ``bam-scattered``), ``listing`` (``ls``, ``huge-listing``), ``hdf5`` (``h5py``),
  ``control``, ``ledger`` (``ledger``, ``ledger-tls``, ``ledger-idle``; its table:
  ``ledger_report``; its VCF: ``vcf``);
- ``front``: the latency front the ledger runs through (a TCP proxy with an RTT, optional
  TLS with a throwaway CA, counters of connections and handshakes);
- ``cluster``: ``scripts/bench cluster``, N mounts of one token under a tight SB budget,
  alone and sharing a Redis (``--shared-state``): API requests, 429s, the slowest node;
- ``odm_names``: ``scripts/bench odm-names``, an ODM folder of 10,000 files walked by names
  (``ls``, ``find``) and by attributes (``ls -l``) at 40 ms: requests and time;
- ``harness``: what every mount workload runs on (the emulator's controls, mounting, running
  a tool, RSS sampling, figures and table rows);
- ``common``: what both sub-commands use (errors, the generated big file, loopback HTTP and SB
  look-ups, starting the emulator, medians and tables);
- ``cli``: the command line and the exit statuses; ``__main__``: ``python -m bench``.

The emulator and the mounts are started with the tests' helpers (``tests.support``), so the
bench and the tests start them the same way.
"""
