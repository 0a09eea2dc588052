import Diffusion
import Foundation
import Numerics

// OpenBLAS reads its core type when it loads: pick the fastest kernels before anything else.
KernelSelection.ensureFastestKernels()

let version = "0.1.0"
let arguments = Array(CommandLine.arguments.dropFirst())

func printUsage() {
    print("""
    usage: preftune <command>

    commands:
      --version              version, BLAS kernels and threads in use
      inspect-model <file>   architecture and parameter count of a model safetensors file
      help                   this text
    """)
}

switch arguments.first {
case "--version", "version":
    print("preftune \(version)")
    print("blas: OpenBLAS \(BLASRuntime.coreName) kernels, \(BLASRuntime.threadCount) threads (OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"))")
case "inspect-model":
    guard arguments.count == 2 else {
        FileHandle.standardError.write(Data("usage: preftune inspect-model <file.safetensors>\n".utf8))
        exit(2)
    }
    do {
        let model = try ModelFile.load(arguments[1])
        print("config: \(model.config.json)")
        print("parameters: \(model.parameters.count)")
    } catch {
        FileHandle.standardError.write(Data("preftune: \(error)\n".utf8))
        exit(1)
    }
case nil, "help", "--help", "-h":
    printUsage()
default:
    FileHandle.standardError.write(Data("preftune: unknown command '\(arguments[0])'\n".utf8))
    printUsage()
    exit(2)
}
