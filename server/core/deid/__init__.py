"""De-identification on ingest (DICOM PS3.15 Annex E; EUCAIM/LETHE-compatible pseudonyms).

``policy`` holds the model a dataset carries (profile, options, burned-in handling);
``engine.deidentify`` turns one spooled Part-10 file into its de-identified copy
and returns what it did (a ``DeidRecord``, never original values).
"""
