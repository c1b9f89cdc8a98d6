"""EUCAIM federated search (Tier 2): the query tree, its vocabulary and count protection.

Pure logic: the edge (server.federation) parses the request, the service narrows it to the
datasets that answer, and each index backend translates the plan built here.
"""
