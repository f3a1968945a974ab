"""The InfluxDB store against real servers: v2 writes into VictoriaMetrics, InfluxQL on InfluxDB."""

from datetime import UTC, datetime, timedelta

import pytest

from firewatch.bench.servers import InfluxDB1, VictoriaMetrics
from firewatch.contract import ReadingBatch
from ingest.influx_store import InfluxTimeSeries, batch_to_line, batch_to_point, township_tag

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)


def batch(seq: int, seconds: float, value: float) -> ReadingBatch:
    return ReadingBatch(
        gateway_id="gw-1",
        seq=seq,
        device_id="rc-gas-1",
        institution_id="rongcheng-eldercare",
        kind="gas_detector",
        ts=T0 + timedelta(seconds=seconds),
        profile="generic-gas-lel",
        readings={"gas_concentration": value},
        flags={"sensor_fault": False},
    )


@pytest.fixture
def victoria(tmp_path):
    server = VictoriaMetrics(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influxdb(tmp_path):
    server = InfluxDB1(tmp_path)
    server.start()
    server.create_database("firewatch")
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("readings", "township"),
    [
        ({"residual_current": 80.0, "cable_temp_1": 31.25, "cable_temp_2": -5.0}, "蓉城镇"),
        ({"residual_current": 1e-7, "cable_temp_1": 123456789.123, "cable_temp_2": 0.0}, None),
        ({"residual_current": 3.0}, "East Town, ward=2 \\"),
    ],
)
def test_the_written_line_is_the_one_influxdb_client_builds(readings, township):
    b = ReadingBatch(
        gateway_id="gw_1.a",
        seq=1,
        device_id="efm-1",
        institution_id="home-2",
        kind="electrical_fire_monitor",
        ts=T0 + timedelta(microseconds=1999),
        profile="generic-efm-4t",
        readings=readings,
        flags={"sensor_fault": True, "device_residual_alarm": False},
    )
    assert (
        batch_to_line(b, township_tag(township)) == batch_to_point(b, township).to_line_protocol()
    )


async def test_a_batch_arrives_with_its_tags_fields_and_device_timestamp(victoria):
    store = InfluxTimeSeries(
        victoria.url,
        token="",
        org="firewatch",
        bucket="firewatch",
        townships={"rongcheng-eldercare": "蓉城镇"},
    )
    await store.open()
    await store.write([batch(1, 0, 12.5)])
    await store.close()

    [series] = victoria.export('{__name__="gas_detector_gas_concentration"}')
    assert series["metric"] == {
        "__name__": "gas_detector_gas_concentration",
        "device": "rc-gas-1",
        "institution": "rongcheng-eldercare",
        "gateway": "gw-1",
        "township": "蓉城镇",
    }
    assert series["values"] == [12.5]
    assert series["timestamps"] == [int(T0.timestamp() * 1000)]


async def test_writing_a_redelivered_batch_again_leaves_one_point(victoria):
    store = InfluxTimeSeries(victoria.url, token="", org="firewatch", bucket="firewatch")
    await store.open()
    await store.write([batch(1, 0, 12.5)])
    await store.write([batch(1, 0, 12.5)])
    await store.close()
    [series] = victoria.export('{__name__="gas_detector_gas_concentration"}')
    assert len(series["values"]) == 1


async def test_history_comes_back_through_influxql_aggregated_per_interval(influxdb):
    influxdb.write_lines(
        "firewatch",
        [
            batch_to_point(batch(seq, seconds, value)).to_line_protocol()
            for seq, (seconds, value) in enumerate([(0, 1.0), (30, 3.0), (60, 10.0), (90, 20.0)], 1)
        ],
    )
    store = InfluxTimeSeries(influxdb.url, token="", org="firewatch", bucket="firewatch")
    await store.open()
    points = await store.history("rc-gas-1", "gas_concentration", T0, T0 + timedelta(minutes=5), 60)
    await store.close()
    assert [(p.mean, p.min, p.max, p.count) for p in points] == [
        (2.0, 1.0, 3.0, 2),
        (15.0, 10.0, 20.0, 2),
    ]
    assert points[0].time == T0


async def test_a_server_that_refuses_the_write_raises_so_the_message_is_retried(influxdb):
    # InfluxDB 1.x has no /api/v2/write: the write fails loudly instead of being dropped
    store = InfluxTimeSeries(influxdb.url, token="", org="firewatch", bucket="firewatch")
    await store.open()
    with pytest.raises(Exception, match="404"):
        await store.write([batch(1, 0, 1.0)])
    await store.close()
