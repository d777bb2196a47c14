"""The library's layers only look down: data <- models <- train <- loading <- modes.

An AST walk over every module of `lite_bert/` (imports inside functions too):
no module imports one of a higher layer, and no mode imports another mode
(what several modes share lives in a lower layer). The layers are drawn in the
README's Layout section.
"""

import ast
import re
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lite_bert"

# Lower number = lower layer. A module may import its own layer and those below.
LAYERS = {
    "lite_bert": 0, "lite_bert.errors": 0, "lite_bert.paths": 0, "lite_bert.files": 0,
    "lite_bert.host": 0,
    "lite_bert.data": 1,
    "lite_bert.models": 2,
    "lite_bert.train": 3,
    # Loading what a run left behind: workdirs, Hugging Face folders, teachers.
    "lite_bert.pretrained": 4, "lite_bert.teachers": 4, "lite_bert.export": 4,
    "lite_bert.inspect": 4, "lite_bert.predictor": 4,
    "lite_bert.modes": 5, "lite_bert.cli": 5,
}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
  """The layer of the longest LAYERS prefix of `module`."""
  best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
  return LAYERS[best]


def imports(path: pathlib.Path) -> set:
  """Every lite_bert module `path` imports (for `from a import b`, a.b if it is a module)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.split(".")[0] == "lite_bert"}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
        and node.module.split(".")[0] == "lite_bert":
      for alias in node.names:
        sub = PACKAGE.parent / (node.module.replace(".", "/") + "/" + alias.name)
        is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
        found.add(f"{node.module}.{alias.name}" if is_module else node.module)
  return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
  for path in MODULES:
    layer(module_name(path))  # raises ValueError (max of nothing) for an unplaced module


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_look_down(path):
  name = module_name(path)
  for imported in imports(path):
    assert layer(imported) <= layer(name), f"{name} (layer {layer(name)}) imports {imported} " \
                                           f"(layer {layer(imported)})"
    if name.startswith("lite_bert.modes.") and imported.startswith("lite_bert.modes."):
      assert imported == "lite_bert.modes", f"mode {name} imports mode {imported}"


def test_the_check_sees_an_upward_import(tmp_path):
  """The walk finds imports inside functions and resolves `from a import module`."""
  source = tmp_path / "upward.py"
  source.write_text("from lite_bert.models import encoder\n"
                    "def f():\n  from lite_bert import pretrained\n"
                    "  import lite_bert.modes.finetune\n")
  found = imports(source)
  assert found == {"lite_bert.models.encoder", "lite_bert.pretrained", "lite_bert.modes.finetune"}
  # Placed in models/, two of them would be upward imports.
  assert [m for m in sorted(found) if layer(m) > layer("lite_bert.models.student")] == [
      "lite_bert.modes.finetune", "lite_bert.pretrained"]


# ----------------------------------------------- Hugging Face names: convert/ only
#
# Names only transformers uses (class names, checkpoint parameter paths), as
# they would appear in code: identifiers, attributes and string constants.
# Docstrings and comments may mention them; code outside the convert package
# must ask `lite_bert.models.convert` instead.
HF_NAME = re.compile(
    r"(Bert|Albert|DistilBert)(Config|Model|ForPreTraining|ForMaskedLM|ForSequenceClassification)"
    r"|attention\.self\.|attention\.output\.|albert_layer_groups|albert_layers|cls\.predictions"
    r"|vocab_transform|vocab_projector|q_lin|k_lin|v_lin|sop_classifier|seq_relationship"
    r"|embedding_hidden_mapping_in|word_embeddings\.weight|LayerNorm\.weight")
CONVERT = PACKAGE / "models" / "convert"
CODE = [p for p in MODULES + sorted((PACKAGE.parent / "experiments").glob("*.py"))
        + [PACKAGE.parent / "launch.py"] if CONVERT not in p.parents]


def hf_names_in_code(path: pathlib.Path) -> list:
  """(line, text) of every HF name in `path`'s code, docstrings left out."""
  tree = ast.parse(path.read_text())
  docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                                     ast.ClassDef)) and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) \
        and id(node) not in docstrings:
      text = node.value
    elif isinstance(node, ast.Attribute):
      text = node.attr
    elif isinstance(node, ast.Name):
      text = node.id
    else:
      continue
    if HF_NAME.search(text):
      found.append((node.lineno, text[:80]))
  return found


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_hugging_face_names_live_in_convert_only(path):
  assert hf_names_in_code(path) == [], f"{path.name} spells Hugging Face names: ask convert"


def test_the_hf_name_check_sees_code_not_docstrings(tmp_path):
  source = tmp_path / "names.py"
  source.write_text('"""Loads a BertForMaskedLM."""\n'
                    'import transformers\n'
                    'cls = transformers.AlbertForPreTraining\n'
                    'key = "bert.encoder.layer.0.attention.self.query.weight"\n'
                    'def f():\n  """A DistilBertModel."""\n  return "fine"\n')
  assert [line for line, _ in hf_names_in_code(source)] == [3, 4]
