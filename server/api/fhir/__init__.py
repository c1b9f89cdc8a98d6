"""FHIR R4 routers."""
