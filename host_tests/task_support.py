"""Shared by the dual tests of the app's long-running tasks (test_app, test_tasks_memoryerror):
run one as a task until a condition, with a deadline, and a stand-in for the asyncio module
inside app whose sleep takes 10 ms, so a once-a-second round runs a hundred times faster.
Runs on CPython and MicroPython (not a test module itself)."""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio


class FastAsyncio:
    """Stands in for the asyncio module inside app: a round takes 10 ms, not 1 s."""

    @staticmethod
    async def sleep(s):
        await asyncio.sleep(0.01)


def until(coro_fn, done, limit_s=20):
    """Run coro_fn() as a task until done() (or it ended, or limit_s); True if it ended."""
    async def main():
        t = asyncio.create_task(coro_fn())
        waited = 0
        while not done() and not t.done() and waited < limit_s * 100:
            await asyncio.sleep(0.01)
            waited += 1
        ended = t.done()
        t.cancel()
        try:
            await t
        except BaseException:  # the cancel, or what ended the task
            pass
        return ended
    return asyncio.run(main())
