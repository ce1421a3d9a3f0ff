"""Face datasets: insightface RecordIO (read/write), packing, verification pairs, synthetic identities, loading.

Importing this package imports nothing heavy; import the submodules you need (``gluonface.data.record``...).
"""
