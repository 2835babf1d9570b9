import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemAdded(_message.Message):
    __slots__ = ("cart_id", "item_id", "quantity", "timestamp")
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    cart_id: str
    item_id: str
    quantity: int
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, cart_id: _Optional[str] = ..., item_id: _Optional[str] = ..., quantity: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ItemRemoved(_message.Message):
    __slots__ = ("cart_id", "item_id", "quantity", "timestamp")
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    cart_id: str
    item_id: str
    quantity: int
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, cart_id: _Optional[str] = ..., item_id: _Optional[str] = ..., quantity: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CartCheckedOut(_message.Message):
    __slots__ = ("cart_id", "timestamp")
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    cart_id: str
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, cart_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
