# cython: language_level=3
"""SQLite's C API as the store's C paths use it (``_writer``, ``_reader``), and the handle of
a Python ``sqlite3.Connection``: both step their statements on the store's own connection."""

cdef extern from "sqlite3.h":
    ctypedef struct sqlite3:
        pass
    ctypedef struct sqlite3_stmt:
        pass
    int sqlite3_prepare_v2(sqlite3* db, const char* sql, int n, sqlite3_stmt** stmt,
                           const char** tail)
    int sqlite3_bind_int64(sqlite3_stmt* stmt, int i, long long value)
    int sqlite3_bind_text(sqlite3_stmt* stmt, int i, const char* text, int n,
                          void (*destructor)(void*))
    int sqlite3_bind_null(sqlite3_stmt* stmt, int i)
    int sqlite3_step(sqlite3_stmt* stmt)
    int sqlite3_reset(sqlite3_stmt* stmt)
    int sqlite3_finalize(sqlite3_stmt* stmt)
    int sqlite3_column_count(sqlite3_stmt* stmt)
    int sqlite3_column_type(sqlite3_stmt* stmt, int i)
    long long sqlite3_column_int64(sqlite3_stmt* stmt, int i)
    double sqlite3_column_double(sqlite3_stmt* stmt, int i)
    const unsigned char* sqlite3_column_text(sqlite3_stmt* stmt, int i)
    const void* sqlite3_column_blob(sqlite3_stmt* stmt, int i)
    int sqlite3_column_bytes(sqlite3_stmt* stmt, int i)
    const char* sqlite3_errmsg(sqlite3* db)
    const char* sqlite3_db_filename(sqlite3* db, const char* name)
    int SQLITE_OK
    int SQLITE_ROW
    int SQLITE_DONE
    int SQLITE_INTEGER
    int SQLITE_FLOAT
    int SQLITE_TEXT
    int SQLITE_BLOB
    int SQLITE_NULL
    void (*SQLITE_TRANSIENT)(void*)

cdef extern from *:
    """
    #include <sqlite3.h>
    /* CPython's sqlite3.Connection (Modules/_sqlite/connection.h, 3.11-3.13) starts with the
       sqlite3* after the object header (NULL once closed); store_handle checks it. */
    typedef struct { PyObject_HEAD sqlite3 *db; } gpuex_pysqlite_connection;
    static sqlite3 *gpuex_connection_db(PyObject *connection) {
        return ((gpuex_pysqlite_connection *)connection)->db;
    }
    """
    sqlite3* gpuex_connection_db(object connection)


cdef inline sqlite3* store_handle(object connection, str path) except NULL:
    """The ``sqlite3*`` of ``connection``, once it is known to be an open
    ``sqlite3.Connection`` to the file ``path`` (absolute); ValueError otherwise."""
    if type(connection).__module__ != "sqlite3" or type(connection).__name__ != "Connection":
        raise ValueError("not a sqlite3.Connection")
    cdef sqlite3* db = gpuex_connection_db(connection)
    if db == NULL:
        raise ValueError("the connection is closed")
    cdef const char* name = sqlite3_db_filename(db, b"main")
    if name == NULL or name.decode("utf-8", "surrogateescape") != path:
        raise ValueError("the connection's handle does not name the store's file")
    return db
