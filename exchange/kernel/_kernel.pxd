# What the compiled kernel shares with the engine's other compiled steps (exchange/kernel/_mark.pyx)
from exchange.core._lines cimport LineBatch


cdef LineBatch lines_of(object sink)
