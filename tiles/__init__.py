"""GeoLens tiles: rasters in, pixels and lon/lat out. Never imports torch or engine."""
