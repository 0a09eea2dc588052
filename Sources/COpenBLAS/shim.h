// Debian's libopenblas-dev installs OpenBLAS' cblas.h (with openblas_get_corename
// and openblas_set_num_threads) as the system cblas.h through alternatives.
#include <cblas.h>
