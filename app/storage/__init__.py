"""The database: the Beanie declarations (models*), the bound collections (store), the
connection and its error mapping (db), the embedded server, the shard plan, and the
settings recorded with the data."""
