"""A checkpoint format that cannot run code: a zip of JSON (parsed with ``json.loads``) and safetensors entries.

SB3 and sb3-contrib ``.zip`` files store their ``data`` entry with cloudpickle, so loading one can run any code
its author chose. rims_rl's own files (training checkpoints, final and best models, zoo agents, VecNormalize
statistics) use this module instead:

- ``rims_rl.json``: ``{"format": "rims_rl.safe", "version": 1, "kind": ..., ...}``; every value that JSON lacks
  is a small tagged object (tuples, non-finite floats, deques, gymnasium spaces, schedules as data, classes by
  whitelisted name, references to arrays);
- ``tensors.safetensors`` (torch tensors: weights, optimizer state, RNG state) and ``arrays.safetensors``
  (numpy arrays: last observations, VecNormalize statistics, ...).

Nothing is imported by a name read from a file: classes come from the whitelists below, and an unknown tag, class
name, entry or format is an error (:class:`UnsafeCheckpointError` for a non-safe file). SB3 zips are read only
with ``trust_remote_code=True`` (they unpickle); :func:`export_sb3` writes one for ecosystem users.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from safetensors.numpy import load as np_load_bytes
from safetensors.numpy import save as np_save_bytes
from safetensors.torch import load as th_load_bytes
from safetensors.torch import save as th_save_bytes

FORMAT = "rims_rl.safe"
VERSION = 1
META_ENTRY = "rims_rl.json"
TENSORS_ENTRY = "tensors.safetensors"
ARRAYS_ENTRY = "arrays.safetensors"
ALLOWED_ENTRIES = frozenset({META_ENTRY, TENSORS_ENTRY, ARRAYS_ENTRY})
MAX_META_BYTES = 64 << 20
#: the most bytes one tensor entry may hold uncompressed (the largest zoo agent holds 14 MB); an entry declaring
#: more is refused before any of it is decompressed, so a small zip cannot make a reader allocate gigabytes
MAX_TENSOR_BYTES = 256 << 20
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}  # fmt: skip

TRUST_HINT = (
    "it is an SB3/sb3-contrib zip whose 'data' entry holds pickled Python objects, which can run arbitrary code "
    "when loaded; load it only if you trust its source (--trust-remote-code on the command line, "
    "trust_remote_code=True in Python), then re-save it in rims_rl's safe format"
)


class UnsafeCheckpointError(ValueError):
    """A file that is not in the safe format (loading it would unpickle), or whose safe content is malformed."""


def _whitelist() -> dict[str, Any]:
    """:return: every class a safe file may name, by name (built lazily: policies import SB3)."""
    from sb3_contrib import RecurrentPPO as ContribRecurrentPPO
    from sb3_contrib.common.recurrent.policies import (
        RecurrentActorCriticCnnPolicy,
        RecurrentActorCriticPolicy,
        RecurrentMultiInputActorCriticPolicy,
    )
    from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
    from torch import nn

    from rims_rl.algos import RecurrentPPO as RimsRecurrentPPO
    from rims_rl.policies import CnnRimsPolicy, MlpRimsPolicy, MultiInputRimsPolicy
    from rims_rl.torch_layers import MinAtarCNN, MiniGridCNN

    return {
        "sb3_contrib.RecurrentPPO": ContribRecurrentPPO,
        "rims_rl.RecurrentPPO": RimsRecurrentPPO,
        "MlpRimsPolicy": MlpRimsPolicy,
        "CnnRimsPolicy": CnnRimsPolicy,
        "MultiInputRimsPolicy": MultiInputRimsPolicy,
        "MlpLstmPolicy": RecurrentActorCriticPolicy,
        "CnnLstmPolicy": RecurrentActorCriticCnnPolicy,
        "MultiInputLstmPolicy": RecurrentMultiInputActorCriticPolicy,
        "NatureCNN": NatureCNN,
        "MiniGridCNN": MiniGridCNN,
        "MinAtarCNN": MinAtarCNN,
        "FlattenExtractor": FlattenExtractor,
        "CombinedExtractor": CombinedExtractor,
        "Tanh": nn.Tanh,
        "ReLU": nn.ReLU,
        "ELU": nn.ELU,
        "LeakyReLU": nn.LeakyReLU,
        "Adam": th.optim.Adam,
        "AdamW": th.optim.AdamW,
        "RMSprop": th.optim.RMSprop,
    }


class Encoder:
    """
    Turns a Python value into JSON data plus named tensors and arrays (the inverse is :class:`Decoder`).

    :param prefix: prefix of the tensor and array names this encoder creates
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.tensors: dict[str, th.Tensor] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._names: dict[type, str] | None = None
        self._views: dict[tuple[Any, ...], tuple[str, th.Tensor]] = {}
        """(storage, offset, shape, stride, dtype, device) -> the name already given to that view of memory, and the
        tensor itself, held so that its memory cannot be freed and reused by another tensor during encoding"""

    def _class_name(self, cls: type) -> str:
        if self._names is None:
            self._names = {value: key for key, value in _whitelist().items()}
        if cls not in self._names:
            raise TypeError(f"class {cls.__module__}.{cls.__qualname__} is not in the safe-format whitelist")
        return self._names[cls]

    def encode(self, value: Any) -> Any:  # noqa: C901
        """
        :param value: None, bool, int, float, str, list, tuple, dict, deque, numpy array/scalar, torch tensor,
            gymnasium space, SB3 schedule, a whitelisted class, a namedtuple of those
        :return: JSON data
        :raises TypeError: anything else (it could not be restored without code)
        """
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int) and not isinstance(value, np.integer):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, th.Tensor):
            return {"__tensor__": self._tensor_name(value)}
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError("object arrays cannot be stored safely")
            name = f"{self.prefix}a{len(self.arrays)}"
            self.arrays[name] = np.ascontiguousarray(value)
            return {"__ndarray__": name}
        if isinstance(value, np.generic):
            return {"__npscalar__": value.dtype.str, "value": self.encode(value.item())}
        if isinstance(value, deque):
            return {"__deque__": [self.encode(v) for v in value], "maxlen": value.maxlen}
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            if type(value).__name__ != "RNNStates":
                raise TypeError(f"namedtuple {type(value).__name__} cannot be stored safely")
            return {"__rnnstates__": [self.encode(v) for v in value]}
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"__dict__": {k: self.encode(v) for k, v in value.items()}}
            return {"__items__": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, spaces.Space):
            return {"__space__": self._space(value)}
        if isinstance(value, type):
            return {"__class__": self._class_name(value)}
        schedule = _schedule_data(value)
        if schedule is not None:
            return {"__schedule__": schedule}
        raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} cannot be stored safely")

    def _tensor_name(self, value: th.Tensor) -> str:
        """
        :return: the entry holding ``value``; one entry for every alias of the same view of memory (a policy's
            shared features extractor appears three times in its state dict under different keys)
        """
        key = None
        if value.numel() > 0 and value.layout == th.strided:
            key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride(),
                   value.dtype, value.device)  # fmt: skip
            if key in self._views:
                return self._views[key][0]
        name = f"{self.prefix}t{len(self.tensors)}"
        self.tensors[name] = value.detach().cpu().contiguous().clone()
        if key is not None:
            self._views[key] = (name, value)
        return name

    def _space(self, space: spaces.Space) -> dict[str, Any]:
        if isinstance(space, spaces.Box):
            return {"type": "Box", "low": self.encode(space.low), "high": self.encode(space.high), "dtype": space.dtype.str}
        if isinstance(space, spaces.Discrete):
            return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
        if isinstance(space, spaces.MultiDiscrete):
            return {"type": "MultiDiscrete", "nvec": self.encode(space.nvec), "dtype": space.dtype.str}  # type: ignore[union-attr]
        if isinstance(space, spaces.MultiBinary):
            return {"type": "MultiBinary", "n": self.encode(space.n)}
        if isinstance(space, spaces.Dict):
            return {"type": "Dict", "spaces": {k: self._space(v) for k, v in space.spaces.items()}}
        if isinstance(space, spaces.Tuple):
            return {"type": "Tuple", "spaces": [self._space(v) for v in space.spaces]}
        raise TypeError(f"space {type(space).__name__} cannot be stored safely")


def _schedule_data(value: Any) -> dict[str, Any] | None:
    """:return: an SB3 schedule object as data (constant or linear), or None if ``value`` is not one."""
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if isinstance(value, FloatSchedule):
        return _schedule_data(value.value_schedule)
    if isinstance(value, ConstantSchedule):
        return {"type": "constant", "value": float(value.val)}
    if isinstance(value, LinearSchedule):
        return {
            "type": "linear",
            "start": float(value.start),
            "end": float(value.end),
            "end_fraction": float(value.end_fraction),
        }
    return None


def _schedule(data: dict[str, Any]) -> Any:
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if data.get("type") == "constant":
        return FloatSchedule(ConstantSchedule(float(data["value"])))
    if data.get("type") == "linear":
        return FloatSchedule(LinearSchedule(float(data["start"]), float(data["end"]), float(data["end_fraction"])))
    raise UnsafeCheckpointError(f"unknown schedule {data!r}")


class Decoder:
    """
    Rebuilds values written by :class:`Encoder`; only the tags above are understood.

    :param tensors: the file's tensors
    :param arrays: the file's arrays
    """

    def __init__(self, tensors: dict[str, th.Tensor], arrays: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.arrays = arrays
        self._classes: dict[str, Any] | None = None

    def decode(self, data: Any) -> Any:  # noqa: C901
        """
        :param data: JSON data from :meth:`Encoder.encode`
        :return: the value
        :raises UnsafeCheckpointError: an unknown tag, class name or missing tensor
        """
        if data is None or isinstance(data, bool | int | float | str):
            return data
        if isinstance(data, list):
            return [self.decode(v) for v in data]
        if not isinstance(data, dict) or len(data) == 0:
            raise UnsafeCheckpointError(f"malformed value {data!r:.80}")
        if "__dict__" in data:
            return {k: self.decode(v) for k, v in data["__dict__"].items()}
        if "__items__" in data:
            return {self.decode(k): self.decode(v) for k, v in data["__items__"]}
        if "__tuple__" in data:
            return tuple(self.decode(v) for v in data["__tuple__"])
        if "__float__" in data:
            if data["__float__"] not in ("nan", "inf", "-inf"):
                raise UnsafeCheckpointError(f"malformed float {data!r}")
            return float(data["__float__"])
        if "__tensor__" in data:
            return self._get(self.tensors, data["__tensor__"])
        if "__ndarray__" in data:
            return self._get(self.arrays, data["__ndarray__"])
        if "__npscalar__" in data:
            return np.dtype(str(data["__npscalar__"])).type(self.decode(data["value"]))
        if "__deque__" in data:
            return deque((self.decode(v) for v in data["__deque__"]), maxlen=data.get("maxlen"))
        if "__rnnstates__" in data:
            from sb3_contrib.common.recurrent.type_aliases import RNNStates

            return RNNStates(*(self.decode(v) for v in data["__rnnstates__"]))
        if "__space__" in data:
            return self._space(data["__space__"])
        if "__class__" in data:
            if self._classes is None:
                self._classes = _whitelist()
            name = data["__class__"]
            if name not in self._classes:
                raise UnsafeCheckpointError(f"class {name!r} is not in the safe-format whitelist")
            return self._classes[name]
        if "__schedule__" in data:
            return _schedule(data["__schedule__"])
        raise UnsafeCheckpointError(f"unknown tag in {sorted(data)[:3]}")

    @staticmethod
    def _get(store: dict[str, Any], name: Any) -> Any:
        if not isinstance(name, str) or name not in store:
            raise UnsafeCheckpointError(f"missing tensor {name!r}")
        return store[name]

    def _space(self, data: dict[str, Any]) -> spaces.Space:
        kind = data.get("type")
        if kind == "Box":
            dtype = np.dtype(str(data["dtype"]))
            return spaces.Box(low=self.decode(data["low"]), high=self.decode(data["high"]), dtype=dtype)  # type: ignore[arg-type]
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete(self.decode(data["nvec"]), dtype=np.dtype(str(data["dtype"])))  # type: ignore[arg-type]
        if kind == "MultiBinary":
            return spaces.MultiBinary(self.decode(data["n"]))
        if kind == "Dict":
            return spaces.Dict({k: self._space(v) for k, v in data["spaces"].items()})
        if kind == "Tuple":
            return spaces.Tuple([self._space(v) for v in data["spaces"]])
        raise UnsafeCheckpointError(f"unknown space {kind!r}")


def write_container(meta: dict[str, Any], encoder: Encoder) -> bytes:
    """
    :param meta: JSON data (already encoded); ``format`` and ``version`` are added
    :param encoder: the encoder holding the tensors and arrays ``meta`` refers to
    :return: the zip file's bytes
    """
    meta = {"format": FORMAT, "version": VERSION, **meta}
    text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    buffer = io.BytesIO()
    entries = {
        META_ENTRY: text.encode(),
        TENSORS_ENTRY: th_save_bytes(encoder.tensors) if encoder.tensors else b"",
        ARRAYS_ENTRY: np_save_bytes(encoder.arrays) if encoder.arrays else b"",
    }
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in entries.items():  # fixed timestamps: the same content gives the same bytes
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, payload)
    return buffer.getvalue()


def is_safe_file(source: bytes | str | os.PathLike[str]) -> bool:
    """
    :param source: file bytes or path
    :return: whether it is a zip in the safe format (its entries are only the safe ones and the JSON says so)
    """
    try:
        read_container(source)
    except (UnsafeCheckpointError, OSError, zipfile.BadZipFile):
        return False
    return True


def read_container(source: bytes | str | os.PathLike[str]) -> tuple[dict[str, Any], Decoder]:
    """
    :param source: file bytes or path
    :return: (the parsed JSON, a decoder for its values)
    :raises UnsafeCheckpointError: not a safe-format file (e.g. an SB3 zip: the message says how to trust one), or
        one whose entries declare more than :data:`MAX_TENSOR_BYTES` or sizes their headers contradict
    :raises zipfile.BadZipFile: not a zip at all
    """
    with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else Path(source)) as archive:
        names = set(archive.namelist())
        if "data" in names and META_ENTRY not in names:
            raise UnsafeCheckpointError(TRUST_HINT)
        if META_ENTRY not in names or not names <= ALLOWED_ENTRIES:
            raise UnsafeCheckpointError(f"not a rims_rl safe-format file (entries: {sorted(names)[:5]})")
        info = archive.getinfo(META_ENTRY)
        if info.file_size > MAX_META_BYTES:
            raise UnsafeCheckpointError(f"{META_ENTRY} is too large ({info.file_size} bytes)")
        try:
            meta = json.loads(archive.read(META_ENTRY))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UnsafeCheckpointError(f"malformed {META_ENTRY}: {error}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UnsafeCheckpointError("not a rims_rl safe-format file (no format marker)")
        if meta.get("version") != VERSION:
            raise UnsafeCheckpointError(
                f"unsupported safe-format version {meta.get('version')!r} (this rims_rl reads {VERSION})"
            )
        for name in names - {META_ENTRY}:  # every size is checked before any tensor is decompressed
            _check_declared_size(archive.getinfo(name))
        tensor_bytes = _read_tensor_entry(archive, TENSORS_ENTRY) if TENSORS_ENTRY in names else b""
        array_bytes = _read_tensor_entry(archive, ARRAYS_ENTRY) if ARRAYS_ENTRY in names else b""
    try:
        tensors = th_load_bytes(tensor_bytes) if tensor_bytes else {}
        arrays = np_load_bytes(array_bytes) if array_bytes else {}
    except Exception as error:  # safetensors raises its own SafetensorError on a malformed header
        raise UnsafeCheckpointError(f"malformed tensors: {error}") from None
    return meta, Decoder(tensors, arrays)


def _check_declared_size(info: zipfile.ZipInfo) -> None:
    """:raises UnsafeCheckpointError: the entry declares more than :data:`MAX_TENSOR_BYTES` uncompressed."""
    if info.file_size > MAX_TENSOR_BYTES:
        raise UnsafeCheckpointError(
            f"{info.filename} declares {info.file_size} bytes uncompressed, more than rims_rl reads "
            f"({MAX_TENSOR_BYTES} bytes, rims_rl.safe_io.MAX_TENSOR_BYTES); not read"
        )


def _read_tensor_entry(archive: zipfile.ZipFile, name: str) -> bytes:
    """
    Read a safetensors entry in chunks, after checking the sizes its header declares against the entry's.

    :return: the entry's bytes
    :raises UnsafeCheckpointError: the header's tensors do not add up to the entry's declared size (nothing more is
        decompressed), or the entry holds fewer bytes than it declares
    """
    info = archive.getinfo(name)
    _check_declared_size(info)
    size = info.file_size
    if size == 0:
        return b""
    buffer = bytearray(size)  # at most MAX_TENSOR_BYTES; the zip module stops decompressing at the declared size
    view = memoryview(buffer)
    with archive.open(info) as stream:
        done = _read_into(stream, view[:8])
        (header_size,) = struct.unpack("<Q", view[:8]) if done == 8 else (size,)
        if header_size > size - 8:
            raise UnsafeCheckpointError(f"malformed {name}: its header is longer than the entry")
        done += _read_into(stream, view[8 : 8 + header_size])
        try:
            header = json.loads(bytes(view[8:done]))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UnsafeCheckpointError(f"malformed {name} header: {error}") from None
        data_size = _declared_data_size(header, name)
        if 8 + header_size + data_size != size:
            raise UnsafeCheckpointError(
                f"malformed {name}: its header declares {data_size} bytes of tensors, the entry holds {size - 8 - header_size}"
            )
        while done < size:
            got = _read_into(stream, view[done : min(size, done + (1 << 20))])
            if got == 0:
                raise UnsafeCheckpointError(f"truncated {name}")
            done += got
    view.release()
    return bytes(buffer)


def _read_into(stream: Any, view: memoryview) -> int:
    """:return: how many bytes were read into ``view`` (fewer than its length only at the end of the stream)."""
    done = 0
    while done < len(view):
        got = stream.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def _declared_data_size(header: Any, name: str) -> int:
    """:return: the bytes of tensor data a safetensors header declares (each tensor's offsets must fit its shape)."""
    if not isinstance(header, dict):
        raise UnsafeCheckpointError(f"malformed {name} header")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
            count = math.prod(int(n) for n in entry["shape"])
            item = _DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise UnsafeCheckpointError(f"malformed {name} header entry {key!r:.40}") from None
        if begin < 0 or stop - begin != count * item:
            raise UnsafeCheckpointError(f"malformed {name}: tensor {key!r:.40} does not fit its offsets")
        end = max(end, stop)
    return end


# --------------------------------------------------------------------------------------------------------------------
# Models

#: the model attributes rims_rl stores (SB3's own save list: everything but the excluded attributes)
_ALGO_NAMES: dict[str, str] = {"sb3_contrib.RecurrentPPO": "sb3_contrib", "rims_rl.RecurrentPPO": "rims_rl.algos"}


def _algo_name(model: Any) -> str:
    from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

    from rims_rl.algos import RecurrentPPO as RimsRecurrentPPO

    if type(model) is RimsRecurrentPPO:
        return "rims_rl.RecurrentPPO"
    if type(model) is ContribRecurrentPPO:
        return "sb3_contrib.RecurrentPPO"
    raise TypeError(f"only RecurrentPPO models can be saved in the safe format, not {type(model).__name__}")


def model_bytes(model: Any, extra: dict[str, Any] | None = None) -> bytes:
    """
    A model (weights, optimizer state, hyperparameters, counters, schedules, spaces) in the safe format.

    :param model: a RecurrentPPO (sb3-contrib's or rims_rl's)
    :param extra: more values stored under ``extra`` (e.g. the resume state), encoded alike
    :return: the file's bytes
    """
    encoder = Encoder()
    excluded = set(model._excluded_save_params())
    data = {key: value for key, value in model.__dict__.items() if key not in excluded}
    meta: dict[str, Any] = {
        "kind": "model",
        "algo": _algo_name(model),
        "data": encoder.encode(data),
        "params": encoder.encode(model.get_parameters()),
    }
    if extra is not None:
        meta["extra"] = encoder.encode(extra)
    return write_container(meta, encoder)


def save_model(model: Any, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """
    Save ``model`` in the safe format, atomically.

    :param model: a RecurrentPPO
    :param path: the file (``.zip`` appended if missing)
    :param extra: more values stored with it (see :func:`model_bytes`)
    :return: the path written
    """
    from rims_rl.checkpoint import atomic_write

    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    payload = model_bytes(model, extra)
    with atomic_write(path) as file:
        file.write(payload)
    return path


def load_model(
    source: bytes | str | os.PathLike[str],
    env: Any = None,
    device: str | th.device = "auto",
    force_reset: bool = True,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Any:
    """
    Load a RecurrentPPO written by :func:`save_model` (no code runs), or, with ``trust_remote_code=True``, any
    SB3/sb3-contrib RecurrentPPO zip (which unpickles).

    :param source: file bytes or path
    :param env: env to attach (spaces must match), as in SB3's ``load``
    :param device: torch device
    :param force_reset: as in SB3's ``load`` (False: keep the saved last observation, for an exact resume)
    :param trust_remote_code: allow an SB3 zip (runs pickled code from the file)
    :param kwargs: attributes to set on the model (e.g. ``tensorboard_log``)
    :return: the model
    :raises UnsafeCheckpointError: an SB3 zip without ``trust_remote_code``, or a malformed safe file
    """
    try:
        meta, decoder = read_container(source)
    except UnsafeCheckpointError as error:
        if not trust_remote_code or str(error) != TRUST_HINT:
            raise
        from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

        import rims_rl.policies  # noqa: F401  (the pickled policy class must be importable)

        stream: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        return ContribRecurrentPPO.load(stream, env=env, device=device, force_reset=force_reset, **kwargs)
    if meta.get("kind") != "model" or meta.get("algo") not in _ALGO_NAMES:
        raise UnsafeCheckpointError(f"not a model file (kind {meta.get('kind')!r}, algo {meta.get('algo')!r})")
    cls = _whitelist()[meta["algo"]]
    data = decoder.decode(meta["data"])
    params = decoder.decode(meta["params"])
    if not isinstance(data, dict) or not isinstance(params, dict):
        raise UnsafeCheckpointError("malformed model data")
    for key in ("observation_space", "action_space", "policy_class", "policy_kwargs"):
        if key not in data:
            raise UnsafeCheckpointError(f"model data lacks {key!r}")
    if env is not None:
        from stable_baselines3.common.utils import check_for_correct_spaces

        env = cls._wrap_env(env, data.get("verbose", 0))
        check_for_correct_spaces(env, data["observation_space"], data["action_space"])
        if force_reset:
            data["_last_obs"] = None
        data["n_envs"] = env.num_envs
    model = cls(policy=data["policy_class"], env=env, device=device, _init_setup_model=False)
    model.__dict__.update(data)
    model.__dict__.update(kwargs)
    model._setup_model()
    model.set_parameters(params, exact_match=True, device=device)
    if model.use_sde:
        model.policy.reset_noise()
    return model


def read_extra(source: bytes | str | os.PathLike[str]) -> dict[str, Any] | None:
    """
    :param source: file bytes or path of a safe model file
    :return: its ``extra`` values (e.g. the resume state), or None
    """
    meta, decoder = read_container(source)
    if "extra" not in meta:
        return None
    extra = decoder.decode(meta["extra"])
    if not isinstance(extra, dict):
        raise UnsafeCheckpointError("malformed extra data")
    return extra


def export_sb3(source: bytes | str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """
    Write a safe-format model as an ordinary sb3-contrib ``RecurrentPPO`` zip (for ecosystem tools).

    :param source: safe model file (bytes or path)
    :param path: the SB3 zip to write
    :return: the path written
    """
    model = load_model(source, device="cpu")
    from rims_rl.checkpoint import atomic_write

    buffer = io.BytesIO()
    model.save(buffer)
    with atomic_write(path) as file:
        file.write(buffer.getvalue())
    return Path(path)


# --------------------------------------------------------------------------------------------------------------------
# Plain values (resume state, VecNormalize statistics)


def values_bytes(kind: str, values: dict[str, Any]) -> bytes:
    """
    :param kind: what the file holds (checked on read)
    :param values: encodable values
    :return: the file's bytes
    """
    encoder = Encoder()
    return write_container({"kind": kind, "values": encoder.encode(values)}, encoder)


def read_values(source: bytes | str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """
    :param source: file bytes or path written by :func:`values_bytes`
    :param kind: the expected kind
    :return: the values
    """
    meta, decoder = read_container(source)
    if meta.get("kind") != kind:
        raise UnsafeCheckpointError(f"expected a {kind!r} file, got {meta.get('kind')!r}")
    values = decoder.decode(meta["values"])
    if not isinstance(values, dict):
        raise UnsafeCheckpointError("malformed values")
    return values


def all_finite(values: Any) -> bool:
    """
    :param values: nested lists, tuples, dicts, deques of tensors, arrays, floats and anything else (ignored)
    :return: whether every float tensor, array and float in it is finite
    """
    if isinstance(values, th.Tensor):
        return not values.is_floating_point() or bool(th.isfinite(values).all())
    if isinstance(values, np.ndarray):
        return not np.issubdtype(values.dtype, np.floating) or bool(np.isfinite(values).all())
    if isinstance(values, float | np.floating):
        return math.isfinite(values)
    if isinstance(values, dict):
        return all(all_finite(v) for v in values.values())
    if isinstance(values, list | tuple | deque):
        return all(all_finite(v) for v in values)
    return True
