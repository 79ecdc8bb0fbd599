"""Prometheus from the Debian package, scraping every service of the local environment."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from paht_devenv.procs import ManagedProcess, StartupError, port_open, wait_until

RULES_DIR = Path(__file__).resolve().parents[3] / "prometheus"


@dataclass
class PrometheusServer:
    """A Prometheus process with a generated scrape configuration."""

    data_dir: Path
    port: int
    targets: dict[str, int]
    run_dir: Path
    log_dir: Path

    def _config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "global:",
            "  scrape_interval: 5s",
            "  evaluation_interval: 5s",
        ]
        rules = sorted(RULES_DIR.glob("rules/*.yml")) if RULES_DIR.exists() else []
        if rules:
            lines.append("rule_files:")
            lines += [f"  - {rule}" for rule in rules]
        lines.append("scrape_configs:")
        for name, port in self.targets.items():
            lines += [
                f"  - job_name: {name}",
                "    static_configs:",
                f"      - targets: ['127.0.0.1:{port}']",
                "        labels:",
                f"          service: {name}",
            ]
        config = self.data_dir.parent / "prometheus.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def process(self) -> ManagedProcess:
        """The supervised Prometheus process (not started)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise StartupError("prometheus not found: install the Debian package prometheus")
        return ManagedProcess(
            name="prometheus",
            argv=[
                binary,
                f"--config.file={self.data_dir.parent / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=7d",
            ],
            run_dir=self.run_dir,
            log_dir=self.log_dir,
        )

    def start(self, *, timeout: float = 30.0) -> None:
        """Write the configuration and start Prometheus; wait for its port."""
        self._config()
        proc = self.process()
        if not proc.running():
            print(f"[prometheus] starting on 127.0.0.1:{self.port}", flush=True)  # noqa: T201
            proc.start()
        wait_until(
            lambda: port_open(self.port),
            timeout=timeout,
            what="Prometheus",
            log=proc.log_file,
            alive=proc.running,
        )

    def stop(self) -> None:
        """Stop Prometheus."""
        self.process().stop()
