"""The dataset -> DCAT mapping of the catalogue (EUCAIM DCAT-AP v2.0 on a FAIR Data Point).

Pure: ResearchStudy JSON and index figures in, rdflib graphs out; no web, database or file.
"""
