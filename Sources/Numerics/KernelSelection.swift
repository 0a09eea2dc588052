#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS reads `OPENBLAS_CORETYPE` once, when the library is loaded, and on
/// CPUs newer than its own release (0.3.21 on Debian 12) it falls back to old
/// kernels: on a Sapphire Rapids Xeon it picks Prescott (SSE3), about 5× slower
/// than its AVX-512 SkylakeX kernels. Entry points call `ensureFastestKernels`
/// first thing; when the variable is unset it sets the best core type this CPU
/// supports and re-executes the process so that the library loads with it.
/// A value already in the environment is always respected.
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

    /// Re-executes the current process with `OPENBLAS_CORETYPE` set when it is
    /// unset and a better core type is known. Returns normally otherwise.
    public static func ensureFastestKernels() {
        #if os(Linux)
        guard getenv("OPENBLAS_CORETYPE") == nil,
              let coreType = preferredCoreType(cpuFlags: cpuFlags())
        else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
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
