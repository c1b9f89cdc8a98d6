"""FHIR R4 logic (no web framework): search expressions, DICOM→FHIR mapping, conformance."""
