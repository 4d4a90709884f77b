"""Cold start of the Lambda function: import + init time of ``manifest_stitcher.handler``.

Each figure is measured in a fresh interpreter (the median of several runs),
next to the bare import + init time of the libraries the handler uses. The
difference is what the stitcher's own modules add (the request validator, the
core, the transport, the ECR adapter, the handler).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

RUNS = 11

# Run like the function runs: ECR adapter, tracing off outside Lambda (as Powertools does).
ENV = {
    **os.environ,
    "STITCHER_REGISTRY": "ecr",
    "POWERTOOLS_SERVICE_NAME": "manifest-stitcher",
    "POWERTOOLS_METRICS_NAMESPACE": "EcrMultiarch",
    "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"),
    "PYTHONDONTWRITEBYTECODE": "",
}

LIBRARIES = {
    "boto3 + an ECR client": "import boto3; boto3.client('ecr')",
    "powertools Logger": "from aws_lambda_powertools import Logger; Logger()",
    "powertools Metrics": "from aws_lambda_powertools import Metrics; Metrics()",
    "powertools Tracer": "from aws_lambda_powertools import Tracer; Tracer()",
}
# Exactly what the handler module loads and makes at import (boto3 waits for the first call).
BASELINE = (
    "import botocore.config, botocore.exceptions, urllib3, concurrent.futures\n"
    "from aws_lambda_powertools import Logger, Metrics, Tracer\n"
    "from aws_lambda_powertools.metrics import MetricUnit\n"
    "Logger(service='manifest-stitcher'); Tracer(service='manifest-stitcher')\n"
    "Metrics(namespace='EcrMultiarch', service='manifest-stitcher')"
)
# The same client settings as the handler's (standard retries etc.), so the
# difference is our code only.
BASELINE_CLIENT = (
    BASELINE
    + "\nimport boto3\nfrom botocore.config import Config\nboto3.client('ecr', config=Config("
    + "retries={'mode': 'standard', 'total_max_attempts': 6}, connect_timeout=5, "
    + "read_timeout=10, max_pool_connections=32, user_agent_extra='ecr-multiarch'))"
)
HANDLER = "import manifest_stitcher.handler"
HANDLER_CLIENT = "import manifest_stitcher.handler as h; h.ecr_client()"


def once(code: str) -> float:
    """Milliseconds of ``code`` in a fresh interpreter."""
    program = (
        f"import time\nt = time.perf_counter()\n{code}\nprint((time.perf_counter() - t) * 1000)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], env=ENV, capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def own_modules_ms() -> dict[str, float]:
    """Self import time of each ``manifest_stitcher`` module (``-X importtime``), median ms.

    Self time excludes the libraries a module imports, so this is the cost of
    our code alone (the handler's includes making its Logger, Tracer and Metrics).
    """
    runs: dict[str, list[float]] = {}
    for _ in range(RUNS):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", HANDLER],
            env=ENV,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for line in err.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2].startswith("manifest_stitcher"):
                runs.setdefault(parts[2], []).append(int(parts[0]) / 1000)
    return {name: statistics.median(values) for name, values in runs.items()}


def measure(codes: dict[str, str]) -> dict[str, tuple[float, float]]:
    """(median, minimum) milliseconds of each snippet; runs are interleaved so that a
    change of machine load hits every snippet alike."""
    times: dict[str, list[float]] = {name: [] for name in codes}
    for _ in range(RUNS):
        for name, code in codes.items():
            times[name].append(once(code))
    return {name: (statistics.median(v), min(v)) for name, v in times.items()}


def main() -> None:
    """Print the figures."""
    # Warm the file-system cache and byte-code so the first figure is not an outlier.
    subprocess.run([sys.executable, "-c", HANDLER_CLIENT], env=ENV, check=True, capture_output=True)
    print(f"{RUNS} fresh interpreters each; milliseconds of import + init")
    print(f"  {'':<46} {'median':>7} {'min':>7}")
    for name, (median, low) in measure(LIBRARIES).items():
        print(f"  {name:<46} {median:>7.1f} {low:>7.1f}")
    figures = measure(
        {
            "baseline": BASELINE,
            "handler": HANDLER,
            "baseline_client": BASELINE_CLIENT,
            "handler_client": HANDLER_CLIENT,
        }
    )

    def diff(a: str, b: str) -> tuple[float, float]:
        return (figures[a][0] - figures[b][0], figures[a][1] - figures[b][1])

    rows = [
        ("libraries as the handler loads them", figures["baseline"]),
        ("manifest_stitcher.handler (cold-start import)", figures["handler"]),
        ("  our own modules add", diff("handler", "baseline")),
        ("same libraries + boto3 ECR client", figures["baseline_client"]),
        ("handler + its ECR client (first invocation)", figures["handler_client"]),
        ("  our own modules add", diff("handler_client", "baseline_client")),
    ]
    for name, (median, low) in rows:
        print(f"  {name:<46} {median:>7.1f} {low:>7.1f}")
    own = own_modules_ms()
    print("self import time of our modules (-X importtime, median):")
    for name, ms in sorted(own.items(), key=lambda item: -item[1]):
        print(f"  {name:<46} {ms:>7.1f}")
    print(f"  {'total':<46} {sum(own.values()):>7.1f}   (target: < 50 ms)")


if __name__ == "__main__":
    main()
