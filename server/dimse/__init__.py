"""DIMSE edge (PS3.7, PS3.4): C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET over pynetdicom.

A protocol edge beside ``server/api``: it calls the same services as the HTTP routes
(the ingest pipeline, QIDO search, retrieval) with the same Principal a registered
client's token would carry, and audits every operation like an HTTP request.
"""
