// description: C = A x B with A 128x128, B 128x128, f64; C zero-initialized with linalg.fill
func.func @matmul(%A: tensor<128x128xf64>, %B: tensor<128x128xf64>) -> tensor<128x128xf64> {
  %zero = arith.constant 0.0 : f64
  %init = tensor.empty() : tensor<128x128xf64>
  %C = linalg.fill ins(%zero : f64) outs(%init : tensor<128x128xf64>) -> tensor<128x128xf64>
  %R = linalg.matmul ins(%A, %B : tensor<128x128xf64>, tensor<128x128xf64>) outs(%C : tensor<128x128xf64>) -> tensor<128x128xf64>
  return %R : tensor<128x128xf64>
}
