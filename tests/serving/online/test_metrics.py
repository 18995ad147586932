"""Prometheus text: cumulative histogram buckets, labelled counters and gauges."""

from __future__ import annotations

from mlsys.serving.online.metrics import Counter, Gauge, Histogram, Registry


def test_render_prometheus_text():
    r = Registry()
    h = r.add(Histogram("lat_seconds", "Latency.", (0.01, 0.1)))
    c = r.add(Counter("req_total", "Requests."))
    g = r.add(Gauge("info", "Model."))
    h.observe_many([0.005, 0.05, 0.05, 3.0])
    c.inc(code="200")
    c.inc(2, code="200")
    c.inc(code="503")
    g.set(1, version='m/"1"')
    text = r.render()
    assert "# TYPE lat_seconds histogram" in text
    assert 'lat_seconds_bucket{le="0.01"} 1\nlat_seconds_bucket{le="0.1"} 3\nlat_seconds_bucket{le="+Inf"} 4' in text
    assert "lat_seconds_count 4" in text and "lat_seconds_sum 3.105" in text
    assert 'req_total{code="200"} 3' in text and 'req_total{code="503"} 1' in text
    assert 'info{version="m/\\"1\\""} 1' in text
    g.reset()
    assert "info{" not in r.render()
