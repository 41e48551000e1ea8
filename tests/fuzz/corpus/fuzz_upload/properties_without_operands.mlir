func.func @mallolinc(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }#map = affine_map<(d0) -> (d0)>
func.func @f(%a: tensor<4xf32>, %t: tensor<4xf32>) -> tensor<4xf32> {
  %c = arith.constant 1.0 : f32
  %f = linalg.fill <2>
}
func.func @malloc(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }