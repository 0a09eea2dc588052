// Debian's libdnnl-dev: oneDNN's C API. Its CPU runtime is OpenMP (libgomp), whose
// per-thread team size preftune sets through these two (omp.h is GCC's, not in /usr/include).
#include <oneapi/dnnl/dnnl.h>
void omp_set_num_threads(int);
int omp_get_max_threads(void);
