#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS reads its settings from the environment once, when the library is
/// loaded. Two of them matter here:
/// - `OPENBLAS_CORETYPE`: on CPUs newer than its own release (0.3.21 on Debian 12)
///   OpenBLAS falls back to old kernels — on a Sapphire Rapids Xeon it picks
///   Prescott (SSE3), about 5× slower than its AVX-512 SkylakeX kernels.
/// - `OPENBLAS_THREAD_TIMEOUT`: after each call its worker threads spin for 2^N
///   cycles (default 2^28, ~0.1 s) before sleeping, stealing a core from AdamW and
///   the gradient norm (2× slower). 2^20 cycles (~0.5 ms) still spins through the
///   short element-wise gaps between a forward pass's GEMMs, where a sleep and
///   wake-up per GEMM cost small models 20 % (measured: 2^16 made bench-s
///   sampling 1,528 samples/s, 2^20 1,910).
/// And one of libgomp's, oneDNN's OpenMP runtime, read when it loads too:
/// - `OMP_WAIT_POLICY`: by default its threads spin after each product, taking the
///   core the element-wise work between products needs (three timing-sensitive tests
///   failed with it, and a job's companion thread starved); `passive` makes them sleep.
/// Entry points call `ensureFastestKernels` first thing; when either variable is
/// unset it sets it and re-executes the process so the library loads with it.
/// Values already in the environment are always respected.
public enum KernelSelection {
    /// The OpenBLAS core type for this CPU's instruction set, or nil when the
    /// library's own detection is as good as anything we could choose.
    public static func preferredCoreType(cpuFlags: Set<String>) -> String? {
        let avx512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
        if avx512.allSatisfy(cpuFlags.contains) {
            return cpuFlags.contains("avx512_bf16") ? "COOPERLAKE" : "SKYLAKEX"
        }
        if ["avx2", "fma"].allSatisfy(cpuFlags.contains) { return "HASWELL" }
        return nil
    }

    /// The `flags` of the first processor in /proc/cpuinfo (empty elsewhere).
    public static func cpuFlags(cpuinfo: String? = nil) -> Set<String> {
        let text = cpuinfo ?? readFile("/proc/cpuinfo") ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }

    /// Re-executes the current process with the settings above when they are
    /// unset. Returns normally otherwise (or when re-executing fails).
    public static let threadTimeout = "20"

    public static func ensureFastestKernels() {
        #if os(Linux)
        var changed = false
        if getenv("OPENBLAS_CORETYPE") == nil, let coreType = preferredCoreType(cpuFlags: cpuFlags()) {
            setenv("OPENBLAS_CORETYPE", coreType, 1)
            changed = true
        }
        if getenv("OPENBLAS_THREAD_TIMEOUT") == nil {
            setenv("OPENBLAS_THREAD_TIMEOUT", threadTimeout, 1)
            changed = true
        }
        if getenv("OMP_WAIT_POLICY") == nil {
            setenv("OMP_WAIT_POLICY", "passive", 1)
            changed = true
        }
        guard changed else { return }
        let arguments = CommandLine.arguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", argv)
        // execv only returns on failure; carry on with the kernels already loaded.
        for pointer in argv { free(pointer) }
        #endif
    }

    private static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let read = fread(&chunk, 1, chunk.count, file)
            if read <= 0 { break }
            bytes.append(contentsOf: chunk[0..<read])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
