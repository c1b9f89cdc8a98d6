"""Federation edges beside ``api/``: the EUCAIM search route (``router``)."""
