# The book's output records, as C structs: one declaration for the book (matching_core/_book.pyx)
# and for the exchange's compiled order path that reads them in place (exchange/kernel/_kernel.pyx).
# Their layouts are matching_core.codes' FILL_DTYPE and CANCEL_DTYPE (int64 fields, in order).
from libc.stdint cimport int64_t


cdef struct Fill:             # FILL_DTYPE, 56 bytes
    int64_t taker_order_id
    int64_t maker_order_id
    int64_t taker_account
    int64_t maker_account
    int64_t price
    int64_t qty
    int64_t msg_index

cdef struct Cancel:           # CANCEL_DTYPE, 32 bytes
    int64_t order_id
    int64_t account
    int64_t qty
    int64_t msg_index
