"""Where a session's profile comes from when the caller does not hand one over."""

from __future__ import annotations

import os
from pathlib import Path

from ..profile import Profile


def default_profile_path() -> Path:
    """``$MAPISPOOL_PROFILE``, else ``profile.toml`` in the user's config directory."""
    if "MAPISPOOL_PROFILE" in os.environ:
        return Path(os.environ["MAPISPOOL_PROFILE"])
    from platformdirs import user_config_path

    return user_config_path("mapispool") / "profile.toml"


def load_profile(profile: Profile | str | os.PathLike[str] | None) -> Profile:
    """``profile`` itself, the file it names, or the default profile (None)."""
    if isinstance(profile, Profile):
        return profile
    return Profile.load(default_profile_path() if profile is None else profile)
