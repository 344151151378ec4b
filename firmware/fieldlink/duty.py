"""Battery mode (config duty_cycle_s > 0): one wake of a duty-cycled board. Loaded by start.boot
only in that mode (the App's run becomes runner()), so an always-on board carries none of it.

A wake: sample every sensor once; on a connecting wake (dutyplan.connects: every
connect_every-th, and any boot that is not a deep-sleep wake) run the link until everything
held is acked (the server sends queued commands and the desired state right after welcome,
so they are in before that ack), send `sleep` with wake_s and close 1000; all of it within
awake_max_s (server unreachable: the readings stay on flash, the board sleeps again). Then
everything to flash with the seq mark (Outbox.flush: no reboot gap at the next boot), the
wake counter and the clock to RTC memory, and machine.deepsleep until the next cycle."""
import asyncio
import gc

from fieldlink import dutyplan, link, log, proto
from fieldlink.clock import ticks_diff, ticks_ms

_log = log.Logger("duty")


class _Sleep(Exception):
    """Ends the stream with a normal close: the board goes to sleep."""
    code = proto.CLOSE_NORMAL


def sleep_msg(wake_s):
    return '{"t":"sleep","wake_s":%d}' % wake_s


async def _sample_once(app):
    s = app.sampler
    s.sample_now()
    slots = s.due_slots(s._now)
    wait, errs = s.start_slots(slots)
    if wait:
        await asyncio.sleep(wait / 1000)
    s.finish_slots(slots, errs, s._now + wait, app.emit)


async def _send(ws, text):
    await ws.send(text)  # (wait_for needs a coroutine: the port's send may be another awaitable)


def _feed(app):
    if app.wdt is not None:
        app.wdt.feed()


async def _drain(app, budget_ms, every):
    """Run the link until everything is acked or budget_ms is over; True if it was."""
    sup = app.sup
    ob = app.outbox
    t0 = ticks_ms()
    task = asyncio.create_task(sup.run())
    done = False
    try:
        while ticks_diff(ticks_ms(), t0) < budget_ms:
            _feed(app)
            if sup.state == link.S_STREAM and sup.ws is not None and ob.held() == 0:
                done = True
                break
            await asyncio.sleep(0.02)
        if done:
            try:
                await asyncio.wait_for(_send(sup.ws, sleep_msg(dutyplan.wake_s(
                    app.cfg.duty_cycle_s, every, ticks_diff(ticks_ms(), app.t0)))), 2)
            except Exception as e:  # the readings are acked: only the sleep notice is lost
                _log.warn("sleep message: %s", e)
            sup._end(_Sleep("sleep"))  # the stream's teardown closes with 1000
    finally:
        task.cancel()
        try:
            await asyncio.wait_for(task, dutyplan.CLOSE_MS / 1000)
        except BaseException:  # CancelledError, or a close that did not finish in time
            pass
    return done


async def wake(app):
    """One wake; returns the ms to deep-sleep."""
    import machine
    gc.collect()
    cfg = app.cfg
    rtc = machine.RTC()
    cause = machine.reset_cause()
    slept = dutyplan.from_sleep(cause)
    wakes, at = dutyplan.rtc_load(rtc.memory()) if slept else (0, None)
    if at is not None:  # the clock as it was, moved on by the sleep (readings keep their ts)
        app.clock.set_unix_ms(at + ticks_diff(ticks_ms(), app.t0), "rtc")
    connect = dutyplan.connects(wakes, cfg.connect_every, slept)
    cfg.wake = dutyplan.wake_name(cause, machine.wake_reason())  # hello's `wake`
    await _sample_once(app)
    ob = app.outbox
    acked = False
    if connect:
        budget = dutyplan.link_budget_ms(cfg.awake_max_s, ticks_diff(ticks_ms(), app.t0))
        acked = await _drain(app, budget, cfg.connect_every)
    try:
        ob.flush()
    except Exception as e:  # a failing flash: the next boot declares a reboot gap
        _log.error("flush failed: %s", e)
    awake = ticks_diff(ticks_ms(), app.t0)
    ms = dutyplan.sleep_ms(cfg.duty_cycle_s, awake)
    now = app.clock.unix_ms()
    rtc.memory(dutyplan.rtc_dump(dutyplan.next_wakes(wakes, connect),
                                 None if now is None else now + ms))
    _log.info("awake %d ms (%s), held %d, next seq %d: deep sleep %d ms", awake,
              "acked" if acked else ("not acked" if connect else "sampled"), ob.held(),
              ob.next_seq, ms)
    return ms


def runner(app):
    """What app.main runs instead of App.run in battery mode: one wake, then deep sleep
    (machine.deepsleep does not return; Ctrl-C is app.main's, as always-on)."""
    async def run():
        ms = await wake(app)
        import machine
        machine.deepsleep(ms)
    return run
