import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InvoiceLine(_message.Message):
    __slots__ = ("quantity", "unit_price_cents", "amount_cents", "unpriced")
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    quantity: int
    unit_price_cents: int
    amount_cents: int
    unpriced: bool
    def __init__(self, quantity: _Optional[int] = ..., unit_price_cents: _Optional[int] = ..., amount_cents: _Optional[int] = ..., unpriced: _Optional[bool] = ...) -> None: ...

class InvoiceIssued(_message.Message):
    __slots__ = ("invoice_id", "cart_id", "lines", "total_cents", "timestamp")
    class LinesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: InvoiceLine
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[InvoiceLine, _Mapping]] = ...) -> None: ...
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    invoice_id: str
    cart_id: str
    lines: _containers.MessageMap[str, InvoiceLine]
    total_cents: int
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, invoice_id: _Optional[str] = ..., cart_id: _Optional[str] = ..., lines: _Optional[_Mapping[str, InvoiceLine]] = ..., total_cents: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PriceChanged(_message.Message):
    __slots__ = ("item_id", "unit_price_cents", "version", "effective_at")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    unit_price_cents: int
    version: int
    effective_at: _timestamp_pb2.Timestamp
    def __init__(self, item_id: _Optional[str] = ..., unit_price_cents: _Optional[int] = ..., version: _Optional[int] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
