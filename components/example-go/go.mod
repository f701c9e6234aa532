module example-go

go 1.24
