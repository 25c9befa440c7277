# What the firmware relies on in the MicroPython VM the tests run under.
import gc
import os


def test_umqtt_imports_from_lib():
    from umqtt.simple import MQTTClient
    from umqtt.robust import MQTTClient as RobustClient

    assert issubclass(RobustClient, MQTTClient)


def test_sha256_known_digest():
    import hashlib
    import binascii

    digest = binascii.hexlify(hashlib.sha256(b"abc").digest())
    assert digest == b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", digest


def test_heap_limit_in_force():
    heap = int(os.getenv("KIOSK_MP_HEAP"))
    gc.collect()
    total = gc.mem_free() + gc.mem_alloc()
    assert total <= heap + 4096, (total, heap)
    try:
        buf = bytearray(heap + 1024)
    except MemoryError:
        pass
    else:
        raise AssertionError("allocated %d bytes with a %d-byte heap" % (len(buf), heap))


def test_flash_is_a_fresh_working_directory():
    assert os.listdir() == [], os.listdir()
    with open("settings.json", "w") as f:
        f.write("{}")
    assert os.listdir() == ["settings.json"]


async def test_asyncio_is_available():
    import asyncio

    done = []

    async def worker():
        await asyncio.sleep_ms(1)
        done.append(1)

    await asyncio.gather(worker(), worker())
    assert done == [1, 1]
