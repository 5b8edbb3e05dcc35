"""Find the project's configuration again when an option value was taken for a test path.

pytest locates its rootdir and ini file (``pyproject.toml``: ``testpaths``, ``addopts``) before any
plugin is loaded, so at that moment it does not know that ``--dataset`` takes a value: in
``pytest --metric niqe --dataset /data/nips2017`` it takes ``/data/nips2017`` for the test path,
roots the session there, finds no configuration and would collect the current folder. Once this
plugin's options are known, :func:`reroot` runs pytest's own :func:`determine_setup` again on the
real positional arguments and, where the answer differs, puts the right rootdir, ini file and ini
``addopts`` in place before the initial conftests and the test paths are decided.

pytest has no public hook for this, so the function sets the three attributes ``Config.parse``
sets; with a pytest whose internals differ it leaves the configuration as pytest found it.
"""

from __future__ import annotations

import logging

import pytest

log = logging.getLogger(__name__)


def reroot(config: pytest.Config, args: list[str]) -> bool:
    """Re-decide rootdir and ini file from the positional arguments as parsed with every option known.

    Returns:
        True when the ini file changed and its ``addopts`` were put in front of ``args``: the caller
        reads the known arguments again.
    """
    try:
        from _pytest.config.findpaths import determine_setup

        ns = config.known_args_namespace
        rootpath, inipath, inicfg, _ignored = determine_setup(
            inifile=ns.inifilename,
            override_ini=ns.override_ini,
            args=ns.file_or_dir,
            rootdir_cmd_arg=ns.rootdir or None,
            invocation_dir=config.invocation_params.dir,
        )
        old_root, old_ini = config.rootpath, config.inipath
    except (ImportError, AttributeError, TypeError, ValueError) as exc:  # another pytest: leave it alone
        log.debug("not re-rooting: %s", exc)
        return False
    if (rootpath, inipath) == (old_root, old_ini) or inipath is None:
        return False
    config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
    if hasattr(config, "_inicache"):
        config._inicache.clear()
    config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
    if ns.confcutdir == str(old_ini.parent if old_ini is not None else old_root):  # set by pytest, not the user
        ns.confcutdir = str(inipath.parent)
    addopts = config.getini("addopts")
    if addopts:
        args[:] = [*addopts, *args]
    return bool(addopts)
