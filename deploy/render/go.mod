module trading/deploy/render

go 1.22
