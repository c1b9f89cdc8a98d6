"""DICOMweb routers (PS3.18): STOW-RS, QIDO-RS, WADO-RS, DELETE."""
