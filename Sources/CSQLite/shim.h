#include <sqlite3.h>

/// SQLite counts every allocation under a global mutex unless told not to (SQLITE_CONFIG_MEMSTATUS);
/// the service never reads those counts. Must run before SQLite initializes: sqlite3_config is
/// variadic, so Swift reaches it through this wrapper.
static inline int preftune_sqlite_disable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
