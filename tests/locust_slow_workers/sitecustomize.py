"""Put on PYTHONPATH by a test, to make two of Locust's timings deterministic: a worker reports its statistics to
the master once an hour instead of every 3 s, and it takes a second to stop (as a busy worker does, or one whose
users' requests take a while to cancel). A master that only waits its 0.5 s after `quit` then has nothing from its
workers; one that waits for them, as loadgen's locustfile makes it, has everything."""

import importlib.abc
import importlib.util
import sys


class _SlowWorkers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "locust.runners":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            module.WORKER_REPORT_INTERVAL = 3600.0
            stop = module.WorkerRunner.stop

            def slow_stop(self, *args, **kwargs):
                import gevent

                gevent.sleep(1.0)
                return stop(self, *args, **kwargs)

            module.WorkerRunner.stop = slow_stop

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _SlowWorkers())
