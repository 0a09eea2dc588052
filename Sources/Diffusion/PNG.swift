/// A PNG encoder for sample grids, with no image library: 8-bit greyscale or RGB,
/// the image data in a zlib stream of stored (uncompressed) deflate blocks. Samples
/// are small; what matters is that every viewer opens the file.
public enum PNG {
    /// `pixels` holds `height` rows of `width` × `channels` bytes (channels 1 or 3).
    public static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> [UInt8] {
        precondition(channels == 1 || channels == 3, "greyscale or RGB")
        precondition(pixels.count == width * height * channels, "one byte per channel per pixel")
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var header: [UInt8] = []
        header += bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        header += [8, channels == 3 ? 2 : 0, 0, 0, 0]  // bit depth, colour type, deflate, adaptive filters, no interlace
        chunk("IHDR", header, into: &png)
        // Each row starts with its filter type: 0, none.
        var raw: [UInt8] = []
        raw.reserveCapacity((width * channels + 1) * height)
        let stride = width * channels
        for y in 0..<height {
            raw.append(0)
            raw += pixels[(y * stride)..<((y + 1) * stride)]
        }
        chunk("IDAT", zlibStored(raw), into: &png)
        chunk("IEND", [], into: &png)
        return png
    }

    static func chunk(_ type: String, _ data: [UInt8], into png: inout [UInt8]) {
        let typeBytes = Array(type.utf8)
        png += bigEndian(UInt32(data.count))
        png += typeBytes + data
        png += bigEndian(crc32(typeBytes + data))
    }

    /// A zlib stream (RFC 1950) whose deflate blocks (RFC 1951) are stored, at most 65,535 bytes each.
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let length = min(65_535, data.count - offset)
            let last: UInt8 = offset + length == data.count ? 1 : 0
            out.append(last)
            out += [UInt8(length & 0xFF), UInt8(length >> 8), UInt8(~length & 0xFF), UInt8((~length >> 8) & 0xFF)]
            out += data[offset..<(offset + length)]
            offset += length
        } while offset < data.count
        return out + bigEndian(adler32(data))
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = crcTable[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in bytes {
            a = (a + UInt32(byte)) % 65_521
            b = (b + a) % 65_521
        }
        return b << 16 | a
    }

    /// Samples of shape [C, H, W] (C·H·W order, values in [−1, 1]) laid out as a grid of
    /// `columns`, each pixel repeated `scale` times, with a 1-pixel gap between tiles.
    public static func grid(samples: [[Float]], channels: Int, height: Int, width: Int, columns: Int, scale: Int) -> [UInt8] {
        let rows = (samples.count + columns - 1) / columns
        let tileWidth = width * scale, tileHeight = height * scale
        let imageWidth = columns * tileWidth + (columns - 1), imageHeight = rows * tileHeight + (rows - 1)
        let outChannels = channels == 1 ? 1 : 3
        var pixels = [UInt8](repeating: 255, count: imageWidth * imageHeight * outChannels)
        for (index, sample) in samples.enumerated() {
            let originX = (index % columns) * (tileWidth + 1), originY = (index / columns) * (tileHeight + 1)
            for y in 0..<tileHeight {
                for x in 0..<tileWidth {
                    for c in 0..<outChannels {
                        let value = sample[c * height * width + (y / scale) * width + (x / scale)]
                        let byte = UInt8((min(max((value + 1) / 2, 0), 1) * 255).rounded())
                        pixels[((originY + y) * imageWidth + originX + x) * outChannels + c] = byte
                    }
                }
            }
        }
        return encode(width: imageWidth, height: imageHeight, channels: outChannels, pixels: pixels)
    }
}
