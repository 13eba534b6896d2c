"""GeoLens app: the Gradio UI (map, panels, results store). Thin wiring over tiles and engine."""
