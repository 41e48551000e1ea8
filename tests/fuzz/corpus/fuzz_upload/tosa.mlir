func.func @tosa_mlp(%x: tensor<1x16x32xf32>, %w: tensor<1x32x8xf32>) -> tensor<1x16x8xf32> {
  %m = tosa.matmul %x, %w : (tensor<1x16x32xf32>, tensor<1x32x8xf32>) -> tensor<1x16x8xf32>
  %r = tosa.clamp %m {min_fp = 0.0 : f32, max_fp = 3.4028235e38 : f32, min_int = 0 : i64, max_int = 9223372036854775807 : i64} : (tensor<1x16x8xf32>) -> tensor<1x16x8xf32>
  return %r : tensor<1x16x8xf32>
}
