"""Under load: ten requests queued at once through Gradio's own queue API run one at a time, in
arrival order, without errors, while map tiles (FastAPI routes, not the queue) keep loading."""

from __future__ import annotations

import json
import threading
import uuid

import httpx
import morecantile

from tests.e2e.server import start_app

N_REQUESTS = 10


def _tile_urls(app) -> list[str]:
    raster = next(r for r in app.services.catalog_list() if r.georeferenced)
    west, south, east, north = raster.bounds_lonlat
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(west, south, east, north, [14, 15, 16]))
    return [f"{app.url}/tiles/{raster.raster_id}/{t.z}/{t.x}/{t.y}.png" for t in tiles]


class TileLoader(threading.Thread):
    """Fetches tiles in a loop until stopped; remembers (status, queue busy?) per tile."""

    def __init__(self, urls: list[str], busy: threading.Event) -> None:
        super().__init__(daemon=True)
        self.urls, self.busy, self.stop = urls, busy, threading.Event()
        self.fetched: list[tuple[int, bool]] = []

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                response = client.get(self.urls[i % len(self.urls)])
                self.fetched.append((response.status_code, self.busy.is_set()))
                i += 1


def _events(client: httpx.Client, url: str, session: str, n_done: int):
    """Yield the queue's SSE messages for ``session`` until ``n_done`` events completed."""
    done = 0
    with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            yield message
            if message.get("msg") == "process_completed":
                done += 1
                if done == n_done:
                    return


def test_ten_concurrent_requests_complete_in_order_while_tiles_load(tmp_path, e2e_rasters, e2e_engine):
    app = start_app(tmp_path / "ws", e2e_rasters, engine=e2e_engine, basemaps=False)
    busy = threading.Event()
    loader = TileLoader(_tile_urls(app), busy)
    try:
        with httpx.Client(timeout=120) as client:
            config = client.get(f"{app.url}/config").json()
            ask_dep = next(d for d in config["dependencies"] if d.get("api_name") == "ask")
            raster_id = next(r.raster_id for r in app.services.catalog_list() if r.georeferenced)
            session = uuid.uuid4().hex
            loader.start()
            event_ids = []
            busy.set()
            for i in range(N_REQUESTS):
                # the Ask inputs: raster, bands, task, question, labels, tiles to search, map value,
                # stop switch, ticket, selection, table offset and filters
                body = {"data": [raster_id, "auto", "Ask", f"question {i}", "", None, {}, None, None, None, 0,
                                 "All rasters", "All tasks"],
                        "fn_index": ask_dep["id"], "session_hash": session}
                response = client.post(f"{app.url}/gradio_api/queue/join", json=body)
                assert response.status_code == 200, response.text
                event_ids.append(response.json()["event_id"])
            messages = list(_events(client, app.url, session, N_REQUESTS))
            busy.clear()
    finally:
        loader.stop.set()
        loader.join(30)
        app.stop()

    started = [m["event_id"] for m in messages if m.get("msg") == "process_starts"]
    completed = [m for m in messages if m.get("msg") == "process_completed"]
    assert started == event_ids  # one at a time, first come first served
    assert [m["event_id"] for m in completed] == event_ids
    assert all(m["success"] for m in completed), [m.get("output") for m in completed if not m["success"]]
    # ... and the results were stored in that order (read back from the workspace's store on disk)
    from app.results import RESULTS_FILENAME, ResultsStore

    questions = [s.question for s in ResultsStore(tmp_path / "ws" / RESULTS_FILENAME).summaries()]
    assert questions == [f"question {i}" for i in range(N_REQUESTS)]
    # tiles kept loading while the engine queue was busy, every one of them fine
    assert loader.fetched and all(status == 200 for status, _ in loader.fetched)
    assert sum(1 for _, during in loader.fetched if during) > N_REQUESTS
