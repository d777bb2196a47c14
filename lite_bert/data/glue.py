"""GLUE tasks as data: a `TaskSpec` per task and readers for its rows.

A task is described, not coded: which TSV file holds each split, which
column holds each field (by header name, or by index for headerless files),
the label set, the metrics. `TASKS` has the eight GLUE tasks with the official
GLUE TSV layouts; `TaskSpec.from_dict` makes a new task from a config (a
folder, fields, labels) with no code change.

Field names are TFDS `glue/<config>` feature names, so the two readers give
the same rows:

* `read_task(spec, split)`: the local TSV under `paths.data_dir()/glue/<folder>`
  (UTF-8 with or without BOM, split on tabs only, no CSV quoting);
* `read_task_from_tfds(spec, split, data_dir)`: a prepared TFDS `glue/<config>`
  through `tfds.data_source` (array_record; no TensorFlow).

Each row is `{<text field>: str, ..., 'label': int, 'idx': int}`: `label` is
an index into `spec.labels` (a float for regression tasks), `idx` the row's
position in its file (0 = first data row), as TFDS numbers them.
"""

import dataclasses
import os
import pathlib
from typing import Any, Mapping, Optional, Union

from lite_bert import paths
from lite_bert.errors import UserError, clip

METRICS = ("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman")
LABEL_FIELD = "label"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Where a sentence(-pair) classification or regression task's data is.

  Attributes:
    name: task name as printed ('SST-2').
    folder: the folder holding the split files: absolute, or relative to
      `paths.data_dir()/glue`.
    text_fields: the one or two text inputs, e.g. ('sentence',) or
      ('sentence1', 'sentence2'), in the order the encoder reads them.
    labels: the label strings as written in the file, in the order of the
      label ids (label i is `labels[i]`); None for a regression task.
    is_regression: True iff `labels` is None; the label is a float.
    metrics: metric names, the first the one to select checkpoints by
      (from `METRICS`).
    splits: split name -> file name inside `folder`.
    columns: field (each text field and 'label') -> TSV column: the header
      name when `has_header`, else the 0-based column index.
    has_header: whether line 1 of every split file is a header.
    num_columns: for headerless files: the number of columns of every row.
    label_names: readable names of the labels, for reports (default
      `labels`).
    tfds_name: the TFDS dataset with the same fields ('glue/sst2'), if any.
  """

  name: str
  folder: str
  text_fields: tuple[str, ...]
  labels: Optional[tuple[str, ...]]
  metrics: tuple[str, ...]
  splits: Mapping[str, str]
  columns: Mapping[str, Union[str, int]]
  is_regression: bool = False
  has_header: bool = True
  num_columns: Optional[int] = None
  label_names: Optional[tuple[str, ...]] = None
  tfds_name: Optional[str] = None

  def __post_init__(self):
    where = f"task {self.name!r}"
    if not self.text_fields or len(self.text_fields) > 2:
      raise UserError(f"{where}: text_fields must name 1 or 2 fields, got "
                      f"{self.text_fields!r}")
    if self.is_regression != (self.labels is None):
      raise UserError(f"{where}: a regression task has labels=None and a "
                      "classification task a tuple of labels")
    if self.labels is not None:
      if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
        raise UserError(f"{where}: labels must be 2 or more distinct strings, "
                        f"got {self.labels!r}")
      if self.label_names is not None and len(self.label_names) != len(
          self.labels):
        raise UserError(f"{where}: label_names has {len(self.label_names)} "
                        f"entries for {len(self.labels)} labels")
    unknown = [m for m in self.metrics if m not in METRICS]
    if not self.metrics or unknown:
      raise UserError(f"{where}: metrics must be some of {METRICS}, got "
                      f"{self.metrics!r}")
    if not self.splits:
      raise UserError(f"{where}: splits must map split names to files")
    needed = (*self.text_fields, LABEL_FIELD)
    missing = [f for f in needed if f not in self.columns]
    if missing:
      raise UserError(f"{where}: columns has no entry for {missing} (needs "
                      f"one per field of {needed})")
    if self.has_header:
      if not all(isinstance(self.columns[f], str) for f in needed):
        raise UserError(f"{where}: with a header, columns must name header "
                        f"fields, got {dict(self.columns)!r}")
    else:
      indices = [self.columns[f] for f in needed]
      if not all(isinstance(i, int) and i >= 0 for i in indices):
        raise UserError(f"{where}: without a header, columns must be column "
                        f"indices, got {dict(self.columns)!r}")
      if self.num_columns is None or max(indices) >= self.num_columns:
        raise UserError(f"{where}: without a header, num_columns must be set "
                        f"and larger than every column index")

  @property
  def num_labels(self) -> int:
    """Outputs of the task head: number of classes, 1 for regression."""
    return 1 if self.labels is None else len(self.labels)

  @classmethod
  def from_dict(cls, fields: Mapping[str, Any]) -> "TaskSpec":
    """A TaskSpec from config values (lists become tuples; unknown keys fail).

    Example (a new task, no code change):
      {'name': 'my_task', 'folder': '/data/my_task',
       'text_fields': ['sentence'], 'labels': ['neg', 'pos'],
       'metrics': ['accuracy'],
       'splits': {'train': 'train.tsv', 'validation': 'dev.tsv'},
       'columns': {'sentence': 'text', 'label': 'polarity'}}
    """
    if hasattr(fields, "to_dict"):  # ml_collections.ConfigDict
      fields = fields.to_dict()
    fields = dict(fields)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise UserError(f"task {fields.get('name', '?')!r}: unknown field(s) "
                      f"{unknown}; a task has {sorted(known)}")
    for required in ("name", "folder", "text_fields", "metrics", "splits",
                     "columns"):
      if required not in fields:
        raise UserError(f"task {fields.get('name', '?')!r}: missing field "
                        f"{required!r}")
    for key in ("text_fields", "labels", "metrics", "label_names"):
      if fields.get(key) is not None:
        if isinstance(fields[key], str):
          raise UserError(f"task {fields['name']!r}: {key} must be a list, "
                          f"got the string {fields[key]!r}")
        fields[key] = tuple(str(v) for v in fields[key])
    fields.setdefault("labels", None)
    fields.setdefault("is_regression", fields["labels"] is None)
    fields["splits"] = dict(fields["splits"])
    fields["columns"] = dict(fields["columns"])
    return cls(**fields)


def _binary(name, folder, text_fields, columns, labels=("0", "1"),
            label_names=None, metrics=("accuracy",), tfds_config=None,
            **kwargs) -> TaskSpec:
  return TaskSpec(
      name=name, folder=folder, text_fields=text_fields, labels=labels,
      label_names=label_names, metrics=metrics,
      splits=kwargs.pop("splits", {"train": "train.tsv",
                                   "validation": "dev.tsv"}),
      columns=columns, tfds_name=f"glue/{tfds_config}", **kwargs)


# The official GLUE TSV layouts (as written by GLUE's download script). Label
# orders follow TFDS `glue/*` ClassLabel names so ids agree with TFDS.
TASKS: dict[str, TaskSpec] = {
    # sentence<TAB>label
    "sst2": _binary(
        "SST-2", "SST-2", ("sentence",),
        {"sentence": "sentence", "label": "label"},
        label_names=("negative", "positive"), tfds_config="sst2"),
    # Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String (with a BOM)
    "mrpc": _binary(
        "MRPC", "MRPC", ("sentence1", "sentence2"),
        {"sentence1": "#1 String", "sentence2": "#2 String",
         "label": "Quality"},
        label_names=("not_equivalent", "equivalent"),
        metrics=("f1", "accuracy"), tfds_config="mrpc"),
    # index<TAB>sentence1<TAB>sentence2<TAB>label
    "rte": _binary(
        "RTE", "RTE", ("sentence1", "sentence2"),
        {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
        labels=("entailment", "not_entailment"), tfds_config="rte"),
    # No header: source<TAB>label<TAB>original label<TAB>sentence
    "cola": _binary(
        "CoLA", "CoLA", ("sentence",), {"sentence": 3, "label": 1},
        label_names=("unacceptable", "acceptable"),
        metrics=("matthews_corrcoef",), tfds_config="cola",
        has_header=False, num_columns=4),
    # index genre filename year old_index source1 source2 sentence1
    # sentence2 score
    "stsb": TaskSpec(
        name="STS-B", folder="STS-B", text_fields=("sentence1", "sentence2"),
        labels=None, is_regression=True, metrics=("pearson", "spearman"),
        splits={"train": "train.tsv", "validation": "dev.tsv"},
        columns={"sentence1": "sentence1", "sentence2": "sentence2",
                 "label": "score"},
        tfds_name="glue/stsb"),
    # index<TAB>question<TAB>sentence<TAB>label
    "qnli": _binary(
        "QNLI", "QNLI", ("question", "sentence"),
        {"question": "question", "sentence": "sentence", "label": "label"},
        labels=("entailment", "not_entailment"), tfds_config="qnli"),
    # index promptID pairID genre sentence{1,2}_binary_parse
    # sentence{1,2}_parse sentence1 sentence2 label1 [label2..5] gold_label
    "mnli": TaskSpec(
        name="MNLI", folder="MNLI", text_fields=("premise", "hypothesis"),
        labels=("entailment", "neutral", "contradiction"),
        metrics=("accuracy",),
        splits={"train": "train.tsv",
                "validation_matched": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv"},
        columns={"premise": "sentence1", "hypothesis": "sentence2",
                 "label": "gold_label"},
        tfds_name="glue/mnli"),
    # id<TAB>qid1<TAB>qid2<TAB>question1<TAB>question2<TAB>is_duplicate
    "qqp": _binary(
        "QQP", "QQP", ("question1", "question2"),
        {"question1": "question1", "question2": "question2",
         "label": "is_duplicate"},
        label_names=("not_duplicate", "duplicate"),
        metrics=("f1", "accuracy"), tfds_config="qqp"),
}


def _key(name: str) -> str:
  return "".join(c for c in name.lower() if c.isalnum())


def get_task(task: Union[str, TaskSpec, Mapping[str, Any]]) -> TaskSpec:
  """A TaskSpec from a GLUE name ('SST-2', 'sst2', 'sst_2'), a dict or itself."""
  if isinstance(task, TaskSpec):
    return task
  if isinstance(task, str):
    spec = TASKS.get(_key(task))
    if spec is None:
      raise UserError(f"unknown GLUE task {task!r}; known: "
                      f"{', '.join(s.name for s in TASKS.values())} (or give "
                      "a task dict, see TaskSpec.from_dict)")
    return spec
  return TaskSpec.from_dict(task)


def task_folder(spec: TaskSpec,
                data_dir: Optional[Union[str, os.PathLike]] = None
               ) -> pathlib.Path:
  """The folder with `spec`'s split files: `data_dir`, else its default."""
  if data_dir:
    return pathlib.Path(data_dir).expanduser()
  folder = pathlib.Path(spec.folder).expanduser()
  return folder if folder.is_absolute() else paths.data_dir() / "glue" / folder


def _split_file(spec: TaskSpec, split: str,
                data_dir: Optional[Union[str, os.PathLike]]) -> pathlib.Path:
  if split not in spec.splits:
    raise UserError(f"task {spec.name}: no split {split!r}; it has "
                    f"{sorted(spec.splits)}")
  folder = task_folder(spec, data_dir)
  if not folder.is_dir():
    raise UserError(f"task {spec.name}: data folder not found: {folder}")
  path = folder / spec.splits[split]
  if not path.is_file():
    raise UserError(f"task {spec.name}: {split} file not found: {path}")
  return path


def _lines(path: pathlib.Path) -> list[str]:
  """Decoded lines (BOM dropped, no line ends, trailing empty lines cut)."""
  try:
    raw_lines = path.read_bytes().split(b"\n")
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror or e}") from None
  while raw_lines and not raw_lines[-1].strip():
    raw_lines.pop()
  lines = []
  for number, raw in enumerate(raw_lines, start=1):
    try:
      line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as e:
      raise UserError(f"{path} line {number}: not valid UTF-8 (byte "
                      f"0x{raw[e.start]:02x} at column {e.start + 1})"
                     ) from None
    lines.append(line.removesuffix("\r"))
  return lines


def read_task(spec: Union[str, TaskSpec], split: str,
              data_dir: Optional[Union[str, os.PathLike]] = None
             ) -> list[dict[str, Any]]:
  """Rows of one split of a task's TSV files.

  Args:
    spec: a TaskSpec or a GLUE task name.
    split: a key of `spec.splits` ('train', 'validation', ...).
    data_dir: the folder holding the split files; default
      `paths.data_dir()/glue/<spec.folder>` (or `spec.folder` if absolute).

  Returns:
    One dict per data row, in file order: each text field (str), 'label'
    (int index into `spec.labels`, float for regression) and 'idx' (int,
    0-based data row).

  Raises:
    UserError naming the file (and line): a missing folder or file, a header
    lacking a configured column, a row with another number of columns, a
    label outside the label set (or not a number), no rows, bytes that are
    not UTF-8.
  """
  spec = get_task(spec)
  path = _split_file(spec, split, data_dir)
  lines = _lines(path)
  first_row = 1
  if spec.has_header:
    if not lines:
      raise UserError(f"{path}: empty file (expected a header and rows for "
                      f"task {spec.name})")
    header = lines[0].split("\t")
    positions = {}
    for field, column in spec.columns.items():
      if column not in header:
        raise UserError(f"{path} line 1: the header has no column {column!r} "
                        f"(for field {field!r} of task {spec.name}); it has "
                        f"{clip(repr(header), 120)}")
      if header.count(column) > 1:
        raise UserError(f"{path} line 1: the header names column {column!r} "
                        f"{header.count(column)} times; which one is meant is unclear")
      positions[field] = header.index(column)
    width, layout = len(header), f"header: {', '.join(header)}"
    first_row = 2
  else:
    positions = dict(spec.columns)
    width, layout = spec.num_columns, f"task {spec.name}, no header"
  rows = []
  for number, line in enumerate(lines[first_row - 1:], start=first_row):
    values = line.split("\t")
    if len(values) != width:
      raise UserError(f"{path} line {number}: expected {width} tab-separated "
                      f"fields ({layout}), found {len(values)}")
    row = {field: values[positions[field]] for field in spec.text_fields}
    row[LABEL_FIELD] = _label(spec, values[positions[LABEL_FIELD]], path,
                              number)
    row["idx"] = len(rows)
    rows.append(row)
  if not rows:
    raise UserError(f"{path}: no data rows for split {split!r} of task "
                    f"{spec.name}")
  return rows


def _label(spec: TaskSpec, value: str, path: pathlib.Path,
           number: int) -> Union[int, float]:
  value = value.strip()
  if spec.labels is None:
    try:
      return float(value)
    except ValueError:
      raise UserError(f"{path} line {number}: label {value!r} is not a "
                      f"number (task {spec.name} is a regression)") from None
  try:
    return spec.labels.index(value)
  except ValueError:
    raise UserError(f"{path} line {number}: label {value!r} is not one of "
                    f"{list(spec.labels)} (task {spec.name})") from None


def read_task_from_tfds(spec: Union[str, TaskSpec], split: str,
                        data_dir: Optional[Union[str, os.PathLike]] = None
                       ) -> list[dict[str, Any]]:
  """The rows of a task's TFDS dataset, as `read_task` gives them.

  Args:
    spec: a TaskSpec with a `tfds_name`, or a GLUE task name.
    split: a TFDS split name ('train', 'validation', 'validation_matched'...).
    data_dir: the TFDS data dir holding the prepared dataset (array_record);
      default TFDS's own. Nothing is downloaded.

  Returns:
    Dicts with the same keys as `read_task`, sorted by 'idx'. TFDS keeps
    unlabelled test rows with label -1.

  Raises:
    UserError: no tfds_name, no prepared data (downloads are off), an
      unknown split, features or a label count that do not match the spec.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  spec = get_task(spec)
  if not spec.tfds_name:
    raise UserError(f"task {spec.name} names no TFDS dataset (tfds_name)")
  data_dir = os.fspath(data_dir) if data_dir else None
  where = data_dir or "the default TFDS data dir"
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"tfds has no data for {spec.tfds_name!r} under {where} "
                    f"and downloads are off ({str(e).strip().splitlines()[0]})"
                   ) from None
  if not builder.is_prepared():
    raise UserError(f"tfds has no data for {spec.tfds_name!r}: it is not "
                    f"prepared under {builder.data_dir} and downloads are off")
  if split not in builder.info.splits:
    raise UserError(f"{spec.tfds_name}: no split {split!r}; it has "
                    f"{sorted(builder.info.splits.keys())}")
  features = builder.info.features
  needed = (*spec.text_fields, LABEL_FIELD, "idx")
  missing = [f for f in needed if f not in features]
  if missing:
    raise UserError(f"{spec.tfds_name}: no feature(s) {missing} for task "
                    f"{spec.name}; it has {sorted(features.keys())}")
  num_classes = getattr(features[LABEL_FIELD], "num_classes", None)
  if spec.labels is not None and num_classes != len(spec.labels):
    raise UserError(f"{spec.tfds_name}: label has {num_classes} classes but "
                    f"task {spec.name} has {len(spec.labels)} labels")
  try:
    source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir,
                              download=False, try_gcs=False)
  except NotImplementedError:
    raise UserError(f"{spec.tfds_name} is prepared under {builder.data_dir} "
                    f"as {builder.info.file_format}; reading it without "
                    "TensorFlow needs file_format='array_record'") from None
  rows = []
  for example in source.__getitems__(range(len(source))):
    row = {field: _text(example[field]) for field in spec.text_fields}
    label = example[LABEL_FIELD]
    row[LABEL_FIELD] = float(label) if spec.is_regression else int(label)
    row["idx"] = int(example["idx"])
    rows.append(row)
  rows.sort(key=lambda r: r["idx"])
  return rows


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, str):
    return value
  return _text(value.item())
