import Numerics
KernelSelection.ensureFastestKernels()
print("preftune (BLAS kernels: \(BLASRuntime.coreName))")
