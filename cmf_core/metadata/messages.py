"""ML Metadata's records as plain Python: artifacts, executions, contexts, events, types and property values.

They have the fields, names and behaviour of ml-metadata's protobuf messages (``metadata_store_pb2``) that
the ``Cmf`` API returns and its users touch: ``artifact.id``, ``execution.properties["Execution_uuid"]
.string_value``, ``custom_properties["lr"].double_value``, ``HasField``, ``CopyFrom``, ``==``, and the enums
(``Event.INPUT``, ``STRING``...).  So code written for the original cmflib reads them unchanged, and cmf needs
no ml-metadata (which has no wheel past Python 3.11) nor protobuf to log a pipeline.  Where ml-metadata is
installed and asked for, :mod:`cmf_core.metadata.ml_metadata_store` converts these to its messages and back.

Like protobuf's, a scalar field reads its default (0, ``""``) until set, and :meth:`Message.HasField` tells
whether it was set; ``properties[name]`` creates the value it reads; a :class:`Value` holds one kind of value
at a time.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterable, Optional, Tuple

__all__ = ["UNKNOWN", "INT", "DOUBLE", "STRING", "STRUCT", "PROTO", "BOOLEAN", "Value", "Artifact", "Execution",
           "Context", "Event", "ArtifactType", "ExecutionType", "ContextType", "ParentContext", "Attribution",
           "Association", "StoreError", "NotFoundError", "AlreadyExistsError", "InvalidArgumentError"]

#: The value types a type declares for its properties (ML Metadata's ``PropertyType``).
UNKNOWN, INT, DOUBLE, STRING, STRUCT, PROTO, BOOLEAN = range(7)


class StoreError(Exception):
    """A call the store refused (ML Metadata's ``StatusError``)."""


class NotFoundError(StoreError):
    """No record or type by that id or name."""


class AlreadyExistsError(StoreError):
    """The record, link or type exists already (with other properties, for a type)."""


class InvalidArgumentError(StoreError):
    """The record breaks its type: a property it does not declare, or of another value type."""


class Message:
    """Scalar fields (``_fields``: name -> default) that remember being set, and property maps (``_maps``)."""

    _fields: ClassVar[Dict[str, Any]] = {}
    _maps: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, **values: Any) -> None:
        for name in self._maps:
            object.__setattr__(self, name, self._new_map())
        for name, value in values.items():
            setattr(self, name, value)

    @staticmethod
    def _new_map() -> Dict[str, Any]:
        return PropertyMap()

    def __getattr__(self, name: str) -> Any:  # only for fields never set: their default
        try:
            return type(self)._fields[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._maps:
            target = getattr(self, name)
            target.clear()
            target.update(value)
        elif name in self._fields:
            default = self._fields[name]
            object.__setattr__(self, name, type(default)(value))
        else:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    @classmethod
    def of_row(cls, fields: Dict[str, Any]) -> "Message":
        """A message of ``fields`` as a store read them, taken as they are: no conversion, ten times faster than
        the constructor (an export of 1,000 executions makes 100,000 messages).  Artifacts, executions, contexts
        and values (events: :meth:`Event.of_row`)."""
        message = cls.__new__(cls)
        message.__dict__.update(fields)
        for name in cls._maps:
            message.__dict__[name] = cls._new_map()
        return message

    def set_fields(self) -> Dict[str, Any]:
        """The fields that are set, and the maps, by name: the message's own values, not copies (compare, don't
        change them)."""
        return dict(self.__dict__)

    def plain(self) -> Dict[str, Any]:
        """The fields that are set, and the property maps as dicts of plain values (:meth:`Value.get`)."""
        out = {}
        for name, value in self.__dict__.items():
            if type(value) is PropertyMap:
                out[name] = {key: item.get() for key, item in value.items()}
            elif not isinstance(value, (Message, list)):
                out[name] = dict(value) if isinstance(value, dict) else value
        return out

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's name
        """Whether the scalar field ``name`` was set (even to its default)."""
        if name not in self._fields:
            raise ValueError(f"{type(self).__name__} has no scalar field {name!r}")
        return name in self.__dict__

    def ClearField(self, name: str) -> None:  # noqa: N802
        """Unset the field ``name``: it reads its default again."""
        if name in self._maps:
            getattr(self, name).clear()
        elif name in self._fields:
            self.__dict__.pop(name, None)
        else:
            raise ValueError(f"{type(self).__name__} has no field {name!r}")

    def CopyFrom(self, other: "Message") -> None:  # noqa: N802
        """Make this a copy of ``other`` (of the same class)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot copy a {type(other).__name__} into a {type(self).__name__}")
        for name in self._fields:
            self.__dict__.pop(name, None)
        for name in self._maps:
            getattr(self, name).clear()
        for name, value in other.ListFields():
            setattr(self, name, value)

    def ListFields(self) -> Iterable[Tuple[str, Any]]:  # noqa: N802
        """The set fields and non-empty maps as (name, value), in declaration order (a map as a copy)."""
        for name in self._fields:
            if name in self.__dict__:
                yield name, self.__dict__[name]
        for name in self._maps:
            found = getattr(self, name)
            if found:
                yield name, ([_copy(v) for v in found] if isinstance(found, list) else
                             {key: _copy(value) for key, value in found.items()})

    def __eq__(self, other: object) -> bool:
        # the instance dict holds exactly the fields set and the maps (and an event's path): compared as they are
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment] # mutable, as protobuf's messages

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.ListFields())})"


def _copy(value: Any) -> Any:
    """A copy of a map's item: a fresh message, or the (immutable) value itself."""
    if isinstance(value, Message):
        copied = type(value)()
        copied.CopyFrom(value)
        return copied
    return value


class Value(Message):
    """One property value: an int, a double, a string or a bool (ML Metadata's ``Value``, a oneof)."""

    _fields = {"int_value": 0, "double_value": 0.0, "string_value": "", "bool_value": False}

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._fields:
            for other in self._fields:
                self.__dict__.pop(other, None)
        super().__setattr__(name, value)

    @classmethod
    def of(cls, field: str, value: Any) -> "Value":
        """The value ``value`` in the field ``field`` (``"int_value"``...), taken as it is (see :meth:`of_row`)."""
        made = cls.__new__(cls)
        made.__dict__[field] = value
        return made

    def get(self) -> Any:
        """The value held, whichever kind it is; ``None`` if none."""
        return self.item()[1]

    def item(self) -> Tuple[Optional[str], Any]:
        """The field that holds the value and the value: ``("int_value", 3)``; ``(None, None)`` if none."""
        for item in self.__dict__.items():
            return item
        return None, None

    def WhichOneof(self, group: str) -> Optional[str]:  # noqa: N802
        """The name of the field that holds the value (``group`` is ``"value"``), or ``None``."""
        if group != "value":
            raise ValueError(f"Value has no oneof {group!r}")
        return self.item()[0]

    def __repr__(self) -> str:
        kind = self.WhichOneof("value")
        return f"Value({kind}={getattr(self, kind)!r})" if kind else "Value()"


class PropertyMap(dict):
    """``properties``/``custom_properties``: reading a missing name adds an empty value under it (as protobuf);
    ``in``, ``get`` and ``items`` do not."""

    def __missing__(self, key: str) -> Value:
        value = self[key] = Value()
        return value

    def __setitem__(self, key: str, value: Value) -> None:
        if not isinstance(value, Value):
            raise TypeError(f"a property value is a Value, not {type(value).__name__}")
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = _copy(value)


_TIMES = {"create_time_since_epoch": 0, "last_update_time_since_epoch": 0}
_NODE = {"id": 0, "type_id": 0, "type": "", "name": "", "external_id": ""}


class Artifact(Message):
    """A file, a directory, a metric set...: ``uri`` is its md5 in cmf's records."""

    UNKNOWN, PENDING, LIVE, MARKED_FOR_DELETION, DELETED, ABANDONED, REFERENCE = range(7)  # its state
    _fields = {**_NODE, "uri": "", "state": 0, **_TIMES}
    _maps = ("properties", "custom_properties")


class Execution(Message):
    """A run of a stage."""

    UNKNOWN, NEW, RUNNING, COMPLETE, FAILED, CACHED, CANCELED = range(7)  # its last known state
    _fields = {**_NODE, "last_known_state": 0, **_TIMES}
    _maps = ("properties", "custom_properties")


class Context(Message):
    """A pipeline (``Parent_Context``) or a stage (``Pipeline_Stage``)."""

    _fields = {**_NODE, **_TIMES}
    _maps = ("properties", "custom_properties")


class Step(Message):
    """One step of an event's path: a key (cmf writes the artifact's name) or an index."""

    _fields = {"key": "", "index": 0}


class Steps(list):
    """An event path's steps; ``add(key=...)`` appends one and returns it (as protobuf's repeated fields)."""

    def add(self, **values: Any) -> Step:
        step = Step(**values)
        self.append(step)
        return step


class Path(Message):
    """Where in the execution's inputs or outputs an event's artifact is."""

    _maps = ("steps",)

    @staticmethod
    def _new_map() -> Steps:
        return Steps()

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "steps":
            raise AttributeError(f"Path has no field {name!r}")
        self.steps.clear()
        self.steps.extend(Step(**dict(step.ListFields())) for step in value)


class Event(Message):
    """An execution read (INPUT) or wrote (OUTPUT) an artifact."""

    UNKNOWN, DECLARED_OUTPUT, DECLARED_INPUT, INPUT, OUTPUT, INTERNAL_INPUT, INTERNAL_OUTPUT, PENDING_OUTPUT = range(8)
    _fields = {"artifact_id": 0, "execution_id": 0, "type": 0, "milliseconds_since_epoch": 0}

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "path", Path())
        super().__init__(**values)

    def CopyFrom(self, other: "Message") -> None:  # noqa: N802
        self.path.steps.clear()
        super().CopyFrom(other)

    @classmethod
    def of_row(cls, fields: Dict[str, Any]) -> "Event":
        event = super().of_row(fields)
        event.__dict__["path"] = Path()
        return event

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "path":
            self.path.steps = value.steps
        else:
            super().__setattr__(name, value)

    def ListFields(self) -> Iterable[Tuple[str, Any]]:  # noqa: N802
        yield from super().ListFields()
        if self.path.steps:
            yield "path", self.path


class _Type(Message):
    """A type: its name and the value type (``STRING``, ``INT``...) of each property it declares."""

    _fields = {"id": 0, "name": "", "version": "", "description": "", "external_id": ""}
    _maps = ("properties",)

    @staticmethod
    def _new_map() -> Dict[str, int]:
        return {}


class ArtifactType(_Type):
    """The type of artifacts (``Dataset``, ``Model``, ``Metrics``...)."""


class ExecutionType(_Type):
    """The type of executions (the ``execution_type`` given to ``create_execution``)."""


class ContextType(_Type):
    """The type of contexts (``Parent_Context``, ``Pipeline_Stage``)."""


class ParentContext(Message):
    """A stage's context is a child of its pipeline's."""

    _fields = {"child_id": 0, "parent_id": 0}


class Attribution(Message):
    """An artifact belongs to a context."""

    _fields = {"artifact_id": 0, "context_id": 0}


class Association(Message):
    """An execution belongs to a context."""

    _fields = {"execution_id": 0, "context_id": 0}
