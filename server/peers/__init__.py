"""Outbound clients of other archives (DICOMweb servers, DIMSE peers), used by ``pull``.

They sit beside ``index/`` and ``storage/``: adapters to something outside the process
that services call. No edge calls them, and they call no service: a source enumerates
and fetches instances into spool files; ``services/pull.py`` sends them through ingest.
"""
