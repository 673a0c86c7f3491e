# The book's input and output records, as C structs: one declaration for the book
# (matching_core/_book.pyx), the order-flow generator that writes messages
# (matching_core/_streams.pyx) and the exchange's compiled order path that reads fills and
# cancels in place (exchange/kernel/_kernel.pyx). Their layouts are matching_core.codes'
# MESSAGE_DTYPE (align=True), FILL_DTYPE and CANCEL_DTYPE.
from libc.stdint cimport int64_t, uint8_t


cdef struct Message:          # MESSAGE_DTYPE (align=True), 40 bytes
    int64_t order_id
    int64_t account
    int64_t price
    int64_t qty
    uint8_t op
    uint8_t side
    uint8_t type
    uint8_t tif
    uint8_t post_only


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
