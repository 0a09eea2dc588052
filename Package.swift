// swift-tools-version:6.0
// preftune: preference fine-tuning service for diffusion models.
// No package dependencies: SQLite, OpenBLAS, oneDNN and libpq are system libraries.
// Layers point one way: (JSON, Threads, Numerics) → Diffusion → Training → Jobs → (Store, HTTP) → Service → executables.
import PackageDescription

// Float.squareRoot() goes through C's sqrtf, whose errno side effect keeps LLVM
// from vectorising loops that take square roots (AdamW); we never read errno.
let numericsSettings: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-fno-math-errno"])]

let package = Package(
    name: "preftune",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "preftune", targets: ["preftune"]),
        .executable(name: "preftune-bench", targets: ["preftune-bench"]),
        .executable(name: "preftune-eval", targets: ["preftune-eval"]),
    ],
    targets: [
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPostgres", providers: [.apt(["libpq-dev"])]),
        // oneDNN's C API (matrix products on the CPU's best kernels), with its OpenMP runtime.
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),

        // JSON values and the one encoder of response bodies, payloads and stored JSON.
        .target(name: "JSON", swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]),
        // The one dedicated-thread executor, beside Mutex: threads of our own, named, in order.
        .target(name: "Threads", dependencies: ["CLinux"]),
        // AdamW and the gradient norm in AVX-512, chosen at run time (Swift's baseline build is SSE).
        .target(name: "CKernels"),
        .target(name: "Numerics", dependencies: ["COpenBLAS", "CDNNL", "CLinux", "CKernels", "Threads"], swiftSettings: numericsSettings),
        .target(name: "Diffusion", dependencies: ["Numerics"], swiftSettings: numericsSettings),
        .target(name: "Training", dependencies: ["Numerics", "CKernels", "Diffusion", "JSON"], swiftSettings: numericsSettings),
        // A procedural text-to-image world with a reward: demo data and alignment checks.
        .target(name: "DemoData", dependencies: ["Numerics", "Diffusion", "Training", "JSON"]),

        // The jobs domain: records, statuses, errors, settings and the public representation,
        // shared by the store, the API and the workers.
        .target(name: "Jobs", dependencies: ["Numerics", "Diffusion", "Training", "JSON"]),
        // SQLite through the C API, with migrations from migrations/.
        .target(name: "Store", dependencies: ["CSQLite", "CPostgres", "JSON", "Jobs"]),
        // epoll and eventfd, which Swift's Glibc module does not export.
        .target(name: "CLinux"),
        // HTTP/1.1: knows nothing of jobs or routes.
        .target(name: "HTTP", dependencies: ["CLinux", "JSON", "Threads"]),

        // The API: routes, auth and the error envelope over Store and HTTP.
        .target(name: "Service", dependencies: ["Numerics", "Diffusion", "Training", "JSON", "Jobs", "Store", "HTTP", "CLinux", "Threads"]),

        .executableTarget(name: "preftune", dependencies: ["CLinux", "Numerics", "Diffusion", "Training", "JSON", "Store", "HTTP", "Service", "Threads"]),
        // The machine's ceilings (FMA peak, AdamW's memory floor), measured by the bench beside its figures.
        .target(name: "CCeilings", dependencies: ["CKernels"]),
        .executableTarget(name: "preftune-bench", dependencies: ["Numerics", "Diffusion", "Training", "JSON", "CCeilings"]),
        .executableTarget(name: "preftune-eval", dependencies: ["Numerics", "Diffusion", "Training", "DemoData", "JSON"]),

        // Golden reference files and the helpers that read them, shared by the test targets.
        .target(name: "GoldenFixtures", dependencies: ["Numerics", "Diffusion"], path: "Tests/GoldenFixtures"),
        // What the test targets share: a raw loopback HTTP client, polling, temporary paths.
        .target(name: "TestSupport", dependencies: ["CLinux", "Threads"], path: "Tests/TestSupport"),
        .testTarget(name: "NumericsTests", dependencies: ["Numerics", "CLinux", "CCeilings", "TestSupport"]),
        .testTarget(name: "HTTPTests", dependencies: ["HTTP", "TestSupport"]),
        .testTarget(name: "StoreTests", dependencies: ["Store", "TestSupport"]),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "ThreadsTests", dependencies: ["Threads", "TestSupport"]),
        .testTarget(name: "ServiceTests", dependencies: ["Service", "Store", "HTTP", "Numerics", "Diffusion", "Training", "TestSupport"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Numerics", "Diffusion", "GoldenFixtures", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Numerics", "Diffusion", "Training", "DemoData", "GoldenFixtures", "JSON", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
