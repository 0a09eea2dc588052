// PostgreSQL's client library, libpq (Debian's libpq-dev puts its header under postgresql/).
#include <postgresql/libpq-fe.h>
