module sparkgap.dev/testbed

go 1.26.0

require (
	github.com/google/go-containerregistry v0.20.3 // indirect
	golang.org/x/sys v0.50.0 // indirect
	k8s.io/api v0.33.5 // indirect
	k8s.io/apimachinery v0.33.5 // indirect
	k8s.io/client-go v0.33.5 // indirect
	sigs.k8s.io/sig-storage-lib-external-provisioner/v11 v11.0.1 // indirect
	sigs.k8s.io/yaml v1.4.0 // indirect
)
