import Foundation

/// JSON text already known to be valid (a JSON column written by this service),
/// embedded as is instead of being parsed and written again on every request.
struct RawJSON {
    let text: String
}

/// Writes response bodies. Foundation's JSONSerialization on Linux bridges every
/// value through NSDictionary and sorts keys with locale collation (ICU): it was
/// three quarters of the time of a GET. This writes Swift values directly, keys
/// in byte order, so the output is deterministic.
enum JSONWriter {
    static func encode(_ value: Any) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(value, into: &out)
        return out
    }

    static func write(_ value: Any, into out: inout [UInt8]) {
        switch value {
        case let text as String: writeString(text, into: &out)
        case let raw as RawJSON: out += Array(raw.text.utf8)
        case let object as [String: Any]:
            out.append(UInt8(ascii: "{"))
            for (i, key) in object.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(object[key]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        case let array as [Any]:
            out.append(UInt8(ascii: "["))
            for (i, element) in array.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                write(element, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case is NSNull: out += Array("null".utf8)
        case let number as NSNumber: writeNumber(number, into: &out)
        case let substring as Substring: writeString(String(substring), into: &out)
        default: out += Array("null".utf8)
        }
    }

    /// Swift numbers and Bools arrive as NSNumber here; its type code tells them apart.
    static func writeNumber(_ number: NSNumber, into out: inout [UInt8]) {
        switch String(cString: number.objCType) {
        case "c", "B": out += Array((number.boolValue ? "true" : "false").utf8)
        case "f", "d":
            let double = number.doubleValue
            guard double.isFinite else { out += Array("null".utf8); return }
            if double == double.rounded(), abs(double) < 1e15 { out += Array(String(Int64(double)).utf8) }
            else { out += Array("\(double)".utf8) }
        default: out += Array(String(number.int64Value).utf8)
        }
    }

    static func writeString(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [0x5C, 0x22]
            case UInt8(ascii: "\\"): out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, UInt8(ascii: "n")]
            case 0x0D: out += [0x5C, UInt8(ascii: "r")]
            case 0x09: out += [0x5C, UInt8(ascii: "t")]
            case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
