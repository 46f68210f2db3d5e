"""`lpm-npc soak --served`: NPC sessions coming and going on a real server, and what it reports."""

from __future__ import annotations

import pytest

from lpm_npc.soak_served import END_MODES, ProcessSample, Sample, ServedSoakOptions, growth_per_hour, run_served_soak


def _sample(t_s: float, front_mb: float, worker_mb: float) -> Sample:
    return Sample(t_s, [ProcessSample("front", 1, front_mb, 30, 30), ProcessSample("worker", 2, worker_mb / 2, 10, 5),
                        ProcessSample("worker", 3, worker_mb / 2, 10, 5)], 0, 0)


def test_growth_is_fitted_per_role_after_the_warm_up():
    samples = [_sample(0, 900, 100)] + [_sample(t, 500 + t / 60, 800) for t in (600, 1200, 1800, 2400)]
    g = growth_per_hour(samples, "rss_mb", warm_s=300)   # the first sample (warm-up spike) is left out
    assert g["front"] == pytest.approx(60.0) and g["worker"] == pytest.approx(0.0, abs=1e-6)
    assert growth_per_hour(samples[:1], "rss_mb", warm_s=0) == {}


@pytest.mark.slow
def test_a_short_served_soak_turns_sessions_and_characters_over_without_errors(cache_dir, capsys):
    """Two NPC slots for 30 s on `serve --workers 2 --render-service on`, sessions of 4-6 s ended in all
    three ways, every third one with a character registered from a real portrait and deleted after, and
    no idle rig kept (--rig-cache-mb 0): nothing errs, no server process dies, frames keep coming."""
    opts = ServedSoakOptions(sessions=2, minutes=30 / 60, session_s=(4.0, 6.0), register_every=3, sample_s=6.0,
                             workers=2, render_service="on", rig_cache_mb=0)
    report = run_served_soak(opts, cache_dir=cache_dir)
    assert report["errors"] == []
    assert report["server_alive_at_end"] and report["server_exit_code"] == 0
    assert report["processes_gone"] == {}
    assert report["sessions_opened"] >= 6 and all(report["sessions_ended"][m] >= 1 for m in END_MODES)
    assert report["characters_registered"] >= 1
    assert report["frames"] > 0 and report["delivered_share"] > 0.5, report["delivered_share"]
    roles = report["rss_mb_at_end"]
    assert {"front", "worker", "render"} <= set(roles) and all(v > 0 for v in roles.values())
    assert len(report["samples"]) >= 4
    assert "RSS growth after warm-up" in capsys.readouterr().out
