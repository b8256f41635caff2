"""A third hostile-input review: output files of the examples replaced unasked, a FIFO where a
dataset file belongs reported as missing, and predict --show into a folder that cannot be
written found only after the work. Each is refused in one line, before any work."""
import os

from test_hostile_round2 import run_example

REFUSAL = "which this would replace; give a new folder, or add --overwrite"


# -- the examples keep files already at --out ------------------------------------------------

def test_saliency_maps_example_keeps_an_existing_figure_unless_told(tmp_path):
    (tmp_path / "s.png").write_bytes(b"mine")
    # A model that does not exist: the refusal comes before it is loaded.
    proc = run_example("saliency_maps.py", "--model", "nope.npz", "--out", "s.png", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, f"saliency_maps.py: error: --out .: already holds s.png, {REFUSAL}\n")
    assert (tmp_path / "s.png").read_bytes() == b"mine"
    proc = run_example("saliency_maps.py", "--model", "nope.npz", "--out", "s.png", "--overwrite", cwd=tmp_path)
    assert proc.stderr.startswith("saliency_maps.py: error: nope.npz: no such model file")   # past the check


def test_paper_digits_example_keeps_the_files_of_an_earlier_run_unless_told(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "0001-digit1.jpg").write_bytes(b"mine")
    proc = run_example("paper_digits.py", "--model", "mnist", "--count", "3", "--out", "p", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, f"paper_digits.py: error: --out p: already holds 0001-digit1.jpg, "
                                                 f"{REFUSAL}\n")
    assert os.listdir(tmp_path / "p") == ["0001-digit1.jpg"]         # nothing drawn
    assert (tmp_path / "p" / "0001-digit1.jpg").read_bytes() == b"mine"
    proc = run_example("paper_digits.py", "--model", "mnist", "--count", "3", "--out", "p", "--overwrite",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p" / "0001-digit1.jpg").read_bytes()[:2] == b"\xff\xd8"   # a JPEG now
