# What the compiled kernel shares with the engine's other compiled steps (exchange/kernel/_mark.pyx)
from exchange.core._lines cimport LineBatch


cdef extern from *:
    # GCC/Clang's 128-bit integer, for products of two int64 values (never converted to a
    # Python object directly: see py128)
    ctypedef long long i128 "__int128"


cdef inline object py128(i128 v):
    """A 128-bit integer as a Python int (exactly, whatever its size)."""
    cdef long long hi
    if -(<i128>1 << 63) <= v < (<i128>1 << 63):
        return <long long>v
    hi = <long long>(v >> 64)
    return (<object>hi << 64) + <object>(<unsigned long long>(v & <i128>0xFFFFFFFFFFFFFFFF))


cdef LineBatch lines_of(object sink)
