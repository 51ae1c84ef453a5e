"""`loadgen engine-wheels`: wheels for an offline target, resolved for its Python and minus what it has."""

from backends.engine_wheels import canonical_name, expand_platform, read_have
from tests.conftest import run_loadgen


def test_read_have_takes_pip_freeze_and_drops_local_labels(tmp_path):
    f = tmp_path / "freeze.txt"
    f.write_text("torch==2.11.0+cu130\nTyping_Extensions==4.12.2\n-e git+https://x/y#egg=y\n"
                 "pkg @ file:///tmp/pkg.whl\n# comment\nnumpy == 2.1.0  # pinned\n")
    assert read_have(f) == {"torch": "2.11.0", "typing-extensions": "4.12.2", "numpy": "2.1.0"}


def test_platform_tags_expand_to_every_older_manylinux():
    tags = expand_platform("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and tags[-1] == "manylinux1_x86_64"
    assert "manylinux2014_x86_64" in tags and "manylinux_2_17_x86_64" in tags and "manylinux_2_29_x86_64" not in tags
    assert expand_platform("win_amd64") == ["win_amd64"]
    assert canonical_name("Typing_Extensions") == "typing-extensions"


def test_downloads_the_closure_for_another_python_minus_what_the_target_has(tmp_path):
    have = tmp_path / "have.txt"
    have.write_text("attrs==24.2.0\nmultidict==6.1.0\n")
    out = tmp_path / "wheels"
    proc = run_loadgen("engine-wheels", "aiohttp==3.11.16", "--python", "3.12", "--out", str(out), "--have", str(have))
    assert proc.returncode == 0, proc.stderr
    wheels = sorted(p.name for p in out.glob("*.whl"))
    names = {canonical_name(w.split("-")[0]) for w in wheels}
    assert {"aiohttp", "yarl", "frozenlist", "aiosignal"} <= names
    assert not names & {"attrs", "multidict"}  # the target has them
    compiled = [w for w in wheels if "none-any" not in w]
    assert compiled and all("-cp312-" in w and "x86_64" in w for w in compiled)
    pins = (out / "requirements.txt").read_text()
    assert "aiohttp==3.11.16" in pins and "attrs" not in pins.split("\n", 1)[1]
    assert "left out" in proc.stdout and "--engine-path" in proc.stdout
    # a long download says what it is doing as it goes, wheel by wheel
    assert "resolving aiohttp==3.11.16" in proc.stderr and "downloading" in proc.stderr
    assert f"{len(wheels)}/{len(wheels)} " in proc.stderr


def test_user_errors_are_one_line(tmp_path):
    proc = run_loadgen("engine-wheels", "no-such-package-dissect==1.0", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "failed" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_loadgen("engine-wheels", "aiohttp", "--python", "312", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "MAJOR.MINOR" in proc.stderr
    proc = run_loadgen("engine-wheels", "aiohttp", "--have", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "pip freeze" in proc.stderr


def test_conflicting_target_versions_are_kept_and_reported(tmp_path):
    # aiohttp 3.11.16 needs multidict>=4.5; a target with an older multidict cannot be a constraint
    have = tmp_path / "have.txt"
    have.write_text("multidict==4.0.0\nattrs==24.2.0\n")
    out = tmp_path / "wheels"
    proc = run_loadgen("engine-wheels", "aiohttp==3.11.16", "--out", str(out), "--have", str(have),
                       "--exclude", "aiohappyeyeballs")
    assert proc.returncode == 0, proc.stderr
    assert "conflict" in proc.stdout and "multidict" in proc.stdout
    names = {canonical_name(p.name.split("-")[0]) for p in out.glob("*.whl")}
    assert "aiohttp" in names and not names & {"multidict", "attrs", "aiohappyeyeballs"}
    assert "left out on request: aiohappyeyeballs" in (out / "requirements.txt").read_text()


def test_source_dirs_and_local_wheels_are_built_or_copied_and_their_deps_resolved(tmp_path):
    # an engine that is not on the index (LightLLM): a source tree with one dependency
    src = tmp_path / "toyengine"
    (src / "toyengine").mkdir(parents=True)
    (src / "toyengine" / "__init__.py").write_text("")
    (src / "setup.py").write_text("from setuptools import setup\nsetup(name='toyengine', version='0.1+gabc123', "
                                  "packages=['toyengine'], install_requires=['aiosignal==1.3.1'])\n")
    have = tmp_path / "have.txt"
    have.write_text("attrs==24.2.0\nfrozenlist==1.4.1\n")
    out = tmp_path / "wheels"
    proc = run_loadgen("engine-wheels", str(src), "--out", str(out), "--have", str(have), timeout=300)
    assert proc.returncode == 0, proc.stderr
    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert wheels == ["aiosignal-1.3.1-py3-none-any.whl", "toyengine-0.1+gabc123-py3-none-any.whl"], wheels
    assert "local (built or copied" in proc.stdout and "toyengine-0.1+gabc123" in proc.stdout
    assert "toyengine==0.1+gabc123" in (out / "requirements.txt").read_text()
    # the built wheel given as a file, and a == pin to another version than the target's: carried anyway
    again = tmp_path / "again"
    proc = run_loadgen("engine-wheels", str(out / wheels[1]), "attrs==23.2.0", "--out", str(again),
                       "--have", str(have), timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name.split("-")[0] for p in again.glob("*.whl"))
    assert names == ["aiosignal", "attrs", "toyengine"], names
    assert "attrs==23.2.0" in proc.stdout and "another version" in proc.stdout


def test_local_path_errors_are_one_line(tmp_path):
    proc = run_loadgen("engine-wheels", str(tmp_path / "missing.whl"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_loadgen("engine-wheels", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "setup.py" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_imports_finds_what_an_engine_imports_late_and_the_target_lacks(tmp_path):
    """The LightLLM run that never became ready: every module-level import succeeded, and `import interegular`
    inside a function (in a try that raises again) failed at the first request, its own health check."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    engine = tmp_path / "engine"
    (engine / "eng").mkdir(parents=True)
    (engine / "eng" / "__init__.py").write_text("import os\nimport numpy\nfrom eng import sub\n")
    (engine / "eng" / "sub.py").write_text(
        "def parse(c):\n"
        "    try:\n"
        "        import interegular\n"
        "    except Exception as e:\n"
        "        raise ValueError(str(e))\n"
        "try:\n"
        "    import sgl_kernel\n"
        "except ImportError:\n"
        "    sgl_kernel = None\n"
        "def late():\n"
        "    import zmq, carried_mod\n"
        "    from yaml import safe_load\n"
        "    import vllm_thing\n")
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("numpy==2.5.2\npyzmq==27.0.0\nPyYAML==6.0.3\n"
                      "vllm-thing @ file:///tmp/stage/vllm_thing-1.0-py3-none-any.whl\n")  # carried, not the image's
    carried = tmp_path / "carried"
    carried.mkdir()
    import zipfile

    with zipfile.ZipFile(carried / "carried_mod-1.0-py3-none-any.whl", "w") as z:
        z.writestr("carried_mod/__init__.py", "")
        z.writestr("carried_mod-1.0.dist-info/METADATA", "Name: carried-mod\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "missing_imports.py"), str(engine),
                           "--have", str(freeze), "--carried", str(carried)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr  # something required is missing
    required, optional = proc.stdout.split("optional")
    assert "interegular" in required and "vllm_thing" in required  # re-raised; on the freeze only as carried
    assert "sgl_kernel" in optional and "sgl_kernel" not in required
    for present in ("numpy", "zmq", "yaml", "carried_mod", " os ", " eng "):
        assert present not in proc.stdout
