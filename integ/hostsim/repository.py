"""The update repository a simulated host refreshes against: versions on offer per variant and arch,
waves keyed by the host's seed, and updog's rules for choosing (version-lock, ignore-waves, downgrades)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

MAX_SEED = 2048
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Semver precedence: a release sorts after its pre-releases; numeric identifiers compare as numbers."""
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semver version")
    major, minor, patch, pre = match.groups()
    identifiers = tuple((0, int(p)) if p.isdigit() else (1, p) for p in (pre.split(".") if pre else ()))
    return int(major), int(minor), int(patch), 0 if pre else 1, identifiers


@dataclass(frozen=True)
class Release:
    version: str
    variant: str
    arch: str
    max_version: str | None = None
    waves: tuple[tuple[int, datetime], ...] = ()
    """(starting seed, start time), as in the repository's manifest."""

    def wave_ready(self, seed: int, now: datetime) -> bool:
        """Whether the host with `seed` may see this release at `now` (reference §5)."""
        if not self.waves:
            return True
        waves = sorted(self.waves)
        index = max((i for i, (start_seed, _) in enumerate(waves) if start_seed <= seed), default=0)
        start_seed, start = waves[index]
        if index == len(waves) - 1:
            return now >= start  # the last wave counts as passed once it starts
        end_seed, end = waves[index + 1]
        share = max(seed - start_seed, 0) / max(end_seed - start_seed, 1)
        return now >= start + (end - start) * share


@dataclass
class Repository:
    releases: list[Release] = field(default_factory=list)

    def offer(self, version: str, *, variant: str, arch: str, **extra: object) -> None:
        self.releases.append(Release(version=version, variant=variant, arch=arch, **extra))  # type: ignore[arg-type]

    def withdraw(self, version: str) -> None:
        self.releases = [r for r in self.releases if r.version != version]

    def applicable(
        self, *, variant: str, arch: str, seed: int, ignore_waves: bool, now: datetime
    ) -> list[Release]:
        found = [
            r
            for r in self.releases
            if r.variant == variant
            and r.arch == arch
            and (r.max_version is None or version_key(r.version) <= version_key(r.max_version))
            and (ignore_waves or r.wave_ready(seed, now))
        ]
        return sorted(found, key=lambda r: version_key(r.version), reverse=True)

    def choose(self, candidates: list[Release], *, running: str, version_lock: str) -> Release | None:
        """updog's choice: latest newer release (or a downgrade off a pulled version), or the locked one."""
        lock = version_lock.strip().lower()
        if lock != "latest":
            wanted = lock.removeprefix("v")
            return next((r for r in candidates if r.version == wanted and r.version != running), None)
        for release in candidates:
            newer = version_key(running) < version_key(release.version)
            pulled = release.max_version is not None and version_key(running) > version_key(
                release.max_version
            )
            if newer or pulled:
                return release
        return None
